"""Following publishes that a platform finishes after the job has ended.

A Printify shop connected to a sales channel (Shopify, Etsy, eBay, ...) makes
the channel's product itself, commonly 30-120 s after the publish and at
times much later. Holding a worker for that would stall the queue behind
it, so a job ends once its publishes are accepted, with those products
``publishing``; the follower, run on a schedule, asks the platform about
each one until it is ``published`` (its store link recorded), the platform
gives up, or PRINTIFY_SYNC_WAIT_MS passes (both ``publish_failed``, with the
reason, and retryable by the job's retry).

The follower also reads a product's mockups once more when a platform
renders them after the create (Printify: ``mockupsFinal: false`` in the
result, read again the publisher's ``mockup_wait_ms`` after the job ended).
A re-read that fails is tried again at the next polls, MOCKUP_TRIES times
in all, and then given up with a WARNING in the job's logs: the mockups of
the create answer stay, and the job is not failed for it.

What is followed is kept in DATA_DIR/publishing.json, written before the job
that made the products is recorded as finished, so a restart resumes
following and a crash loses nothing.
"""

import logging
import time

from adapters.api import DurableDict
from adapters.base import AdapterError

log = logging.getLogger('podengine.publishing')

MOCKUP_TRIES = 3  # polls that try to read a product's final mockups


class PublishFollower:
    """The ``publishing`` products of finished jobs, and where each stands.

    ``record(job_id, product_id, changes, message, level)`` writes a change
    to a product into its job (the engine's, which saves it and tells the
    job's watchers); ``path`` None keeps the list in memory only.
    """

    def __init__(self, publishers, record, wait_ms, path=None, clock=time.time):
        self.publishers = {p.name: p for p in publishers}
        self.record = record
        self.wait_ms = wait_ms
        self.clock = clock
        # product id -> {jobId, platform, product, since, and while its
        # mockups are to be read again: mockupsDue (ms), mockupTries}
        self._file = DurableDict(path)
        self.followed = self._file.items

    def __len__(self):
        """How many products are still publishing."""
        return sum(publishing(entry) for entry in self.followed.values())

    def watch(self, job_id, products):
        """Follow the ``publishing`` products of ``job_id``, and those whose
        mockups are not final yet (durably)."""
        added = False
        for product in products or []:
            key = str(product.get('productId'))
            entry = self.followed.get(key)
            if product.get('status') == 'publishing' and not (entry and publishing(entry)):
                entry = self.followed[key] = {**(entry or {}), 'jobId': job_id,
                                              'platform': product['platform'],
                                              'product': product, 'since': self._now_ms()}
                added = True
            if product.get('mockupsFinal') is False and 'mockupsDue' not in (entry or {}):
                wait = getattr(self.publishers.get(product['platform']), 'mockup_wait_ms', 0)
                entry = self.followed[key] = {
                    'jobId': job_id, 'platform': product['platform'], 'product': product,
                    'since': self._now_ms(), **(entry or {}),
                    'mockupsDue': self._now_ms() + wait, 'mockupTries': 0}
                added = True
        if added:
            self._save()

    def poll(self):
        """Ask about each followed product once; record what has settled."""
        for key, entry in list(self.followed.items()):
            try:
                self._check(key, entry)
            except AdapterError as exc:  # the platform is down: ask again next time
                log.warning('following %s %s: %s', entry['platform'], key, exc)
            except Exception:
                log.exception('following %s %s failed', entry['platform'], key)

    def _check(self, key, entry):
        changed = False
        if publishing(entry):
            changed = self._check_publish(key, entry)
        if 'mockupsDue' in entry and self._now_ms() >= entry['mockupsDue']:
            self._read_mockups(key, entry)
            changed = True
        if not publishing(entry) and 'mockupsDue' not in entry:
            del self.followed[key]
        if changed:
            self._save()

    def _check_publish(self, key, entry):
        """Whether the publish of ``key`` has settled (and was recorded)."""
        publisher = self.publishers.get(entry['platform'])
        state, detail = publisher.publish_state(entry['product'])
        if state == 'publishing' and self._now_ms() - entry['since'] > self.wait_ms:
            state, detail = 'publish_failed', (
                f'the {entry["platform"]} publish did not finish within '
                f'{self.wait_ms / 60000:g} min')
        if state == 'publishing':
            return False
        if state == 'published':
            changes = {**detail, 'status': 'published', 'published': True, 'error': None}
            message = (f'{entry["platform"]}: product {key} is published'
                       + (f' at {detail["storeUrl"]}' if detail.get('storeUrl') else ''))
            self.record(entry['jobId'], key, changes, message, 'SUCCESS')
        else:
            changes = {'status': 'publish_failed', 'published': False, 'error': detail}
            self.record(entry['jobId'], key, changes,
                        f'{entry["platform"]}: product {key} was not published: {detail}; '
                        f'retry the job to publish it again', 'ERROR')
        entry['product'] = {**entry['product'], **changes}
        return True

    def _read_mockups(self, key, entry):
        """Read the final mockups of ``key`` once; a failure is tried again at
        the next poll, and given up (WARNING) after MOCKUP_TRIES."""
        publisher = self.publishers.get(entry['platform'])
        try:
            changes = publisher.final_mockups(entry['product'])
        except AdapterError as exc:
            entry['mockupTries'] = entry.get('mockupTries', 0) + 1
            log.warning('reading the mockups of %s %s again: %s', entry['platform'], key, exc)
            if entry['mockupTries'] < MOCKUP_TRIES:
                return
            del entry['mockupsDue']
            self.record(entry['jobId'], key, {},
                        f'{entry["platform"]}: the final mockups of product {key} could not '
                        f'be read ({exc}); those of the create answer are kept', 'WARNING')
            return
        del entry['mockupsDue']
        count = len(changes.get('mockups') or entry['product'].get('mockups') or [])
        self.record(entry['jobId'], key, changes,
                    f'{entry["platform"]}: product {key} has its final {count} mockup(s)')

    def republish(self, job_id, products):
        """Publish a job's ``publish_failed`` products again and follow them;
        returns how many were sent."""
        sent = 0
        for product in products:
            if product.get('status') != 'publish_failed':
                continue
            self.publishers[product['platform']].republish(product)
            product.update(status='publishing', error=None)
            sent += 1
        self.watch(job_id, products)
        return sent

    # The list on disk ----------------------------------------------------------

    def _now_ms(self):
        return int(self.clock() * 1000)

    def _save(self):
        self._file.save()


def publishing(entry):
    """Whether a followed product's publish is still to settle."""
    return entry['product'].get('status') == 'publishing'
