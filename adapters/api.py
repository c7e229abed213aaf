"""What the platform publishers share: rate limiters and one careful HTTP call.

``RateLimiter`` paces requests to a platform's documented limit, shared by
every worker of the engine (one publisher instance serves all jobs), so the
engine aims never to see a 429 at all. ``ApiClient.call`` still handles one:
it waits for ``Retry-After`` (or backs off) and tries again in place, without
spending the job's retry budget, and turns every other failure into an
``AdapterError`` that carries the platform's own reason and says whether a
retry can help.

A create is different: a 5xx, a timeout or a dropped connection does not say
whether the object was saved, and sending it again may make a second one.
``call(..., once=True)`` never sends twice on such an answer; it raises
``UnclearAnswer``, and the caller looks the object up before sending again.
"""

import bisect
import collections
import contextlib
import json
import logging
import os
import random
import time

import gevent
import gevent.lock
import requests

from adapters.base import AdapterError

log = logging.getLogger('podengine.api')


class UnclearAnswer(AdapterError):
    """No clear answer (a 5xx, a timeout, a dropped connection): the request
    may or may not have taken effect upstream."""


class RateLimiter:
    """At most ``limit`` requests in any ``period`` seconds (sliding window),
    as the platform counts them, whatever the network does to each request.

    The platform counts a request at some moment between our sending it and
    our reading its answer, and how long that takes varies (a 5 MB upload on
    a slow link: seconds; a GET: milliseconds). So a request holds a place
    from ``acquire`` until its answer is in (``release``), and the place is
    free again one ``period`` after that answer. Why that is enough: take the
    request of any ``limit + 1`` that the platform counted within one period
    which we sent last, at time s. Each of the others was counted after
    s - period (they all fall in one period and this one was counted at s or
    later), so none had its answer back by s - period: at s, all ``limit``
    of them still held their places, and the limiter would not have let this
    one go. So no margin for network delays is needed, however uneven;
    ``clock`` and ``sleep`` are injectable for tests/test_rate_limiter.py.
    """

    def __init__(self, limit, period, clock=time.monotonic, sleep=gevent.sleep):
        self.limit = limit
        # Our clock and the platform's may run at different rates (NTP slews a
        # clock by at most 500 ppm: 0.1 % apart if both go opposite ways), and
        # it may round its timestamps to the millisecond: hence 0.1 % + 1 ms.
        self.period = period * 1.001 + 0.001
        # A request that failed without an answer (a timeout, a dropped
        # connection) may still be counted after we gave up on it: its place
        # stays taken 5 % of the period + 50 ms longer.
        self.unanswered_grace = period * 0.05 + 0.05
        self._clock = clock
        self._sleep = sleep
        self._sending = 0       # acquired, answer not in yet
        self._answered = []     # when the answers of the others came, ascending
        self._blocked_until = 0.0
        self._lock = gevent.lock.Semaphore()
        self.waits = 0        # acquisitions that had to wait (for /metrics)
        self.waited = 0.0     # seconds spent waiting

    def acquire(self):
        """Wait until one more request fits in the window; returns the wait.
        Call ``release`` once its answer is in, or it failed (``slot`` does both)."""
        waited = 0.0
        with self._lock:  # one waiter at a time keeps the order fair
            while (pause := self._pause()) > 0:
                waited += pause
                self._sleep(pause)
            self._sending += 1
        if waited:
            self.waits += 1
            self.waited += waited
        return waited

    def release(self, answered=True):
        """The request's answer is in; ``answered=False``: it failed without one."""
        self._sending -= 1
        grace = 0.0 if answered else self.unanswered_grace
        bisect.insort(self._answered, self._clock() + grace)

    @contextlib.contextmanager
    def slot(self):
        """``acquire``, the request (the with-block), then ``release``."""
        self.acquire()
        answered = False
        try:
            yield
            answered = True
        finally:
            self.release(answered)

    def penalise(self, seconds):
        """After a 429: take nothing more for ``seconds``."""
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    def _pause(self):
        now = self._clock()
        del self._answered[:bisect.bisect_right(self._answered, now - self.period)]
        if now < self._blocked_until:
            return self._blocked_until - now
        free = self.limit - self._sending  # places for answered requests and this one
        if len(self._answered) < free:
            return 0.0
        if free <= 0:
            # Every place is held by a request still waiting for its answer:
            # none frees sooner than a period from now; look again then.
            return self.period
        return self._answered[len(self._answered) - free] + self.period - now + 0.001


class KeyedLocks:
    """One lock per key, for work that concurrent callers must do only once
    (the second caller waits, then finds the first one's result)."""

    def __init__(self):
        self._locks = {}  # key -> [Semaphore, holders and waiters]

    @contextlib.contextmanager
    def hold(self, key):
        entry = self._locks.setdefault(key, [gevent.lock.Semaphore(), 0])
        entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self._locks[key]


class WaitTally:
    """Waits counted like a RateLimiter's, for limits kept some other way."""

    def __init__(self):
        self.waits = 0
        self.waited = 0.0

    def add(self, seconds):
        self.waits += 1
        self.waited += seconds


class RetryPolicy:
    """How a client tries a request again in place (stripe-python's shape):
    ``tries`` sends in all; before each next one, a 429's ``Retry-After``
    (at most ``longest_wait`` seconds) or a backoff from ``first_wait``
    seconds, doubling up to ``longest_backoff`` (16 times ``first_wait``
    unless given), with jitter. Never a wait after the last try. ``sleep`` is
    injectable, so a test's waits take no time. The engine's retries of a
    whole job back off by one too (RETRY_DELAY_MS, RETRY_MAX_DELAY_MS).
    """

    def __init__(self, tries=6, first_wait=0.5, longest_wait=60.0, sleep=gevent.sleep,
                 longest_backoff=None):
        self.tries = tries
        self.first_wait = first_wait
        self.longest_wait = longest_wait
        self.longest_backoff = 16 * first_wait if longest_backoff is None else longest_backoff
        self.sleep = sleep

    def backoff(self, attempt):
        """Seconds before try ``attempt + 1``: ``first_wait``, twice that, four
        times ..., at most ``longest_backoff``, each +-20 %: jobs that failed
        together must not all come back at the same moment."""
        doubled = self.first_wait * 2 ** min(attempt - 1, 64)
        return min(self.longest_backoff, doubled) * random.uniform(0.8, 1.2)

    def again(self, response):
        """Whether an answer is worth sending the request again for."""
        return response.status_code == 429 or response.status_code >= 500

    def wait(self, attempt, response):
        """Seconds to wait after ``attempt`` was answered with ``response``."""
        if response.status_code == 429:
            return min(retry_after(response) or self.backoff(attempt), self.longest_wait)
        return self.backoff(attempt)


class ApiClient:
    """Base of a platform client: base URL, headers, limiters, retries in place.

    Subclasses set ``platform``, build ``headers()``, pick ``limiters_for(method,
    path)`` and read the platform's error text in ``reason(response)``. The
    session ``http`` and the RetryPolicy ``retry`` are the caller's.
    """

    platform = 'api'

    def __init__(self, base_url, http, retry, timeout=30):
        if http is None:
            raise TypeError(f'{type(self).__name__} needs an HTTP session')
        self.base_url = base_url.rstrip('/')
        self.http = http
        self.retry = retry
        self.timeout = timeout
        self.requests_sent = 0
        self.responses = collections.Counter()  # status code (or 'error') -> count (/metrics)
        self.limits = {}

    def headers(self):
        return {}

    def limiters_for(self, method, path):
        return []

    def reason(self, response):
        return response.text[:300]

    def call(self, method, path, once=False, tries=None, **kwargs):
        """Send one request; the decoded JSON body (or None when empty).

        ``once``: a write that must not happen twice (a create). A 429 is
        still waited out (it was refused, not done), but a 5xx is not sent
        again: it raises UnclearAnswer, as a lost connection does. ``tries``:
        at most this many sends (the policy's when None).
        """
        tries = tries or self.retry.tries
        for attempt in range(1, tries + 1):
            with contextlib.ExitStack() as places:
                for limiter in self.limiters_for(method, path):
                    places.enter_context(limiter.slot())
                response = self._send(method, path, **kwargs)
            if once and response.status_code >= 500:
                raise UnclearAnswer(f'{self.platform}: {method} {path} answered '
                                    f'{response.status_code}: {self.reason(response)}',
                                    adapter=self.platform, status=response.status_code)
            if not self.retry.again(response):
                break
            wait = self.retry.wait(attempt, response)
            if response.status_code == 429:
                for limiter in self.limiters_for(method, path):
                    limiter.penalise(wait)
            if attempt == tries:
                break
            log.warning('%s %s %s answered %s; trying again in %.1fs', self.platform,
                        method, path, response.status_code, wait)
            self.retry.sleep(wait)
        if response.status_code == 429:
            raise AdapterError(f'{self.platform}: {method} {path} still answered 429 after '
                               f'{tries} tries', adapter=self.platform, status=429)
        return self._result(method, path, response)

    def _send(self, method, path, **kwargs):
        self.requests_sent += 1
        try:
            response = self.http.request(method, self.base_url + path, headers=self.headers(),
                                         timeout=self.timeout, **kwargs)
            self.responses[str(response.status_code)] += 1
            return response
        except requests.RequestException as exc:
            self.responses['error'] += 1
            # The exception text can hold the URL, never the headers: no token.
            raise UnclearAnswer(f'{self.platform}: {method} {path} failed: '
                                f'{type(exc).__name__}', adapter=self.platform) from None

    def _result(self, method, path, response):
        if response.status_code >= 400:
            retryable = response.status_code >= 500 or response.status_code in (408, 409)
            raise AdapterError(f'{self.platform} refused {method} {path} '
                               f'({response.status_code}): {self.reason(response)}',
                               adapter=self.platform, status=response.status_code,
                               retryable=retryable)
        if not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            raise AdapterError(f'{self.platform}: {method} {path} sent a body that is not '
                               f'JSON', adapter=self.platform) from None


def retry_after(response):
    try:
        return max(0.0, float(response.headers.get('Retry-After', '')))
    except ValueError:
        return None


def upstream_retry(settings, tries=6):
    """The RetryPolicy of a platform client, from UPSTREAM_RETRY_DELAY_MS."""
    return RetryPolicy(tries=tries, first_wait=settings.upstream_retry_delay_ms / 1000)


class DurableDict:
    """A small dict kept in one JSON file, rewritten (fsynced, renamed) on change."""

    def __init__(self, path):
        self.path = path
        self.items = self._load()

    def _load(self):
        if self.path is None:
            return {}
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            log.error('%s is not JSON; starting empty', self.path)
            return {}

    def save(self):
        if self.path is None:
            return
        temp = self.path.with_name(self.path.name + '.tmp')
        with open(temp, 'w') as file:
            json.dump(self.items, file)
            file.flush()
            os.fsync(file.fileno())
        temp.replace(self.path)
