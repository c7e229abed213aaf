"""Following publishes that a platform finishes after the job has ended.

A Printify shop connected to a sales channel (Shopify, Etsy, eBay, ...) makes
the channel's product itself, commonly 30-120 s after the publish and at
times much later. Holding a worker for that would stall the queue behind
it, so a job ends once its publishes are accepted, with those products
``publishing``; the follower, run on a schedule, asks the platform about
each one until it is ``published`` (its store link recorded), the platform
gives up, or PRINTIFY_SYNC_WAIT_MS passes (both ``publish_failed``, with the
reason, and retryable by the job's retry).

What is followed is kept in DATA_DIR/publishing.json, written before the job
that made the products is recorded as finished, so a restart resumes
following and a crash loses nothing.
"""

import json
import logging
import os
import time

from adapters.base import AdapterError

log = logging.getLogger('podengine.publishing')


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
        self.path = path
        self.clock = clock
        self.followed = self._load()  # product id -> {jobId, platform, product, since}

    def __len__(self):
        return len(self.followed)

    def watch(self, job_id, products):
        """Follow the ``publishing`` products of ``job_id`` (durably)."""
        added = False
        for product in products or []:
            key = str(product.get('productId'))
            if product.get('status') == 'publishing' and key not in self.followed:
                self.followed[key] = {'jobId': job_id, 'platform': product['platform'],
                                      'product': product, 'since': self._now_ms()}
                added = True
        if added:
            self._save()

    def watching(self, job_id):
        return [entry['product'] for entry in self.followed.values()
                if entry['jobId'] == job_id]

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
        publisher = self.publishers.get(entry['platform'])
        state, detail = publisher.publish_state(entry['product'])
        if state == 'publishing' and self._now_ms() - entry['since'] > self.wait_ms:
            state, detail = 'publish_failed', (
                f'the {entry["platform"]} publish did not finish within '
                f'{self.wait_ms / 60000:g} min')
        if state == 'publishing':
            return
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
        del self.followed[key]
        self._save()

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

    def _load(self):
        if self.path is None:
            return {}
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            log.error('%s is not JSON; starting with nothing to follow', self.path)
            return {}

    def _save(self):
        if self.path is None:
            return
        temp = self.path.with_name(self.path.name + '.tmp')
        with open(temp, 'w') as file:
            json.dump(self.followed, file)
            file.flush()
            os.fsync(file.fileno())
        temp.replace(self.path)
