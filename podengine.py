"""POD Engine: prompts in, print-on-demand products out.

One process serves an HTTP API (Bottle on gevent), runs jobs from a priority
queue on greenlet workers, keeps every job durable on disk (an fsynced journal,
compacted into a TinyDB file of the live jobs and an append-only archive of
the finished ones) and streams live events over Socket.IO and a plain
WebSocket (``/ws``).

A ``generate`` job writes design briefs (prompt and listing copy), draws each
design with the image backend, makes it print-ready and creates one product
per product type on each enabled platform. Every finished step is stored as a
checkpoint in the job, so retries, restarts and manual retries resume where the
job stopped and never redo finished work.

Run it with ``python podengine.py`` (``--help`` lists the settings). The file
reads top to bottom in dependency order: settings, errors, events, requests,
store, queue, jobs, adapters, pipeline, metrics, the engine, access control,
HTTP API, WebSocket, main.
"""

import sys

if __name__ == '__main__':
    # Patch before anything imports threading or sockets: Bottle binds its
    # request object to threading.local at import, and patching later mixes
    # up concurrent requests without any error.
    from gevent import monkey
    monkey.patch_all()
    # Plugins that ``import podengine`` must get this module, not a second copy.
    sys.modules.setdefault('podengine', sys.modules['__main__'])

import collections
import dataclasses
import fcntl
import hashlib
import heapq
import hmac
import importlib
import io
import ipaddress
import itertools
import json
import logging
import math
import os
import random
import secrets
import signal
import socket
import string
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, quote

import bottle
import gevent
import gevent.event
import gevent.lock
import gevent.pool
import gevent.pywsgi
import gevent.queue
import requests
import socketio
from apscheduler.schedulers.gevent import GeventScheduler
from geventwebsocket.handler import WebSocketHandler
from PIL import Image
from jsonschema import Draft202012Validator
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from jsonschema.exceptions import best_match
from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Document, Table

from adapters import comfyui, printready, quickcheck
from adapters.api import KeyedLocks, RetryPolicy
from adapters.blocklist import Blocklist
from adapters.orders import (Listings, OrderBook, OrderDesk, product_gid, verify_printify,
                             verify_shopify)
from adapters.publishing import PublishFollower
from adapters.shipments import OrderFollower
from adapters.templates import copy_for
from adapters.base import (AdapterError, Artwork, ConfigError, DesignBrief, ImageFile,
                           ImageSpec, PodEngineError, ProductType, write_atomic)

__version__ = '1.0.0'
__all__ = [
    'AdapterError', 'ConfigError', 'Engine', 'EventBus', 'JobContext',
    'JobFailure', 'JobQueue', 'JournalStore', 'MemoryStore', 'NotFound',
    'PodEngineError', 'SETTINGS', 'Setting', 'Settings', 'StoreError',
    'ValidationError', 'create_app', 'create_wsgi', 'load_settings', 'main',
]

log = logging.getLogger('podengine')


def now_ms():
    return int(time.time() * 1000)


def span(ms):
    """A duration as people say it: "15 min", "2 h", "1.5 s"."""
    for unit, size in (('h', 3_600_000), ('min', 60_000)):
        if ms >= size:
            return f'{ms / size:g} {unit}'
    return f'{ms / 1000:g} s'


###############################################################################
# Settings ####################################################################
###############################################################################

@dataclass(frozen=True)
class Setting:
    """One setting, read from the environment (or .env) under ``name``."""
    name: str
    default: str
    parse: object
    help: str
    secret: bool = False


def parse_number(kind, low, high):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            noun = 'an integer' if kind is int else 'a number'
            raise ValueError(f'expected {noun}, got {text!r}') from None
        if not low <= value <= high:
            raise ValueError(f'expected {low}..{high}, got {value}')
        return value
    return parse


def parse_int(low, high):
    return parse_number(int, low, high)


def parse_float(low, high):
    return parse_number(float, low, high)


def parse_rate(text):
    """``COUNT/SECONDS``, e.g. 600/60: at most COUNT requests in any SECONDS."""
    count, _, seconds = text.partition('/')
    try:
        rate = (int(count), float(seconds))
    except ValueError:
        raise ValueError(f'expected COUNT/SECONDS such as 600/60, got {text!r}') from None
    if rate[0] < 1 or rate[1] <= 0:
        raise ValueError(f'expected a positive COUNT/SECONDS, got {text!r}')
    return rate


def parse_bool(text):
    lowered = text.strip().lower()
    if lowered in ('1', 'true', 'yes', 'on'):
        return True
    if lowered in ('0', 'false', 'no', 'off'):
        return False
    raise ValueError(f'expected true or false, got {text!r}')


def parse_list(text):
    return [part.strip() for part in text.split(',') if part.strip()]


def parse_log_level(text):
    level = text.strip().upper()
    if level not in ('DEBUG', 'INFO', 'WARNING', 'ERROR'):
        raise ValueError(f'expected DEBUG, INFO, WARNING or ERROR, got {text!r}')
    return level


def parse_text(text):
    return text.strip()


def parse_choice(*choices):
    def parse(text):
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f'expected one of {", ".join(choices)}, got {text!r}')
        return value
    return parse


DAY_MS = 86_400_000

SETTINGS = (
    Setting('HOST', '127.0.0.1', parse_text,
            'Address the API binds to. Any other than loopback needs POD_API_KEY.'),
    Setting('PORT', '3000', parse_int(0, 65535), 'API port (0 picks a free one).'),
    Setting('POD_API_KEY', '', parse_text,
            'When set, /api/*, /metrics and WebSockets require it (Authorization: Bearer '
            '<key> or X-API-Key; WebSockets may pass it as auth or ?key=).', secret=True),
    Setting('ALLOW_UNAUTHENTICATED', 'false', parse_bool,
            'Allow a non-loopback HOST without POD_API_KEY (anyone who can reach the port '
            'can then create products).'),
    Setting('CORS_ORIGINS', '', parse_list,
            'Browser origins allowed to call the API and Socket.IO, comma-separated '
            '(default: none).'),
    Setting('PUBLIC_URL', '', parse_text,
            'Base URL users reach the engine at (default: http://HOST:PORT).'),
    Setting('DATA_DIR', './data', parse_text,
            'Where jobs, designs and products are stored.'),
    Setting('MAX_CONCURRENT_JOBS', '2', parse_int(1, 64), 'Jobs run at once.'),
    Setting('MAX_JOB_RETRIES', '3', parse_int(0, 10),
            'Automatic retries of a failed job (a request may set maxRetries).'),
    Setting('MAX_INTERRUPTIONS', '2', parse_int(0, 100),
            'Crashes or restarts a job may live through, apart from its retries; '
            'one more fails it (a job that itself brings the engine down).'),
    Setting('RETRY_DELAY_MS', '5000', parse_int(0, DAY_MS),
            'First retry delay; doubles with each attempt, with jitter.'),
    Setting('RETRY_MAX_DELAY_MS', '300000', parse_int(0, DAY_MS),
            'Cap on the retry delay.'),
    Setting('UPSTREAM_RETRY_DELAY_MS', '500', parse_int(0, 60_000),
            'First in-place wait after a 5xx from Printify, Shopify or the LLM; doubles '
            'with each try, at most 16 times it.'),
    Setting('JOB_TIMEOUT_MS', '600000', parse_int(100, DAY_MS),
            'Time limit of one attempt; the attempt is stopped when it passes.'),
    Setting('ENABLE_PERSISTENCE', 'true', parse_bool,
            'Keep jobs on disk (false: in memory only).'),
    Setting('IMAGE_BACKEND', '', parse_text,
            'Image generator: local or comfyui (default: comfyui when COMFYUI_URL is '
            'set, else local).'),
    Setting('COMFYUI_URL', '', parse_list,
            'ComfyUI server URL, or several, comma-separated (e.g. http://127.0.0.1:8188).'),
    Setting('COMFYUI_WORKFLOW', '', parse_text,
            'API-format workflow JSON with {{prompt}} etc. placeholders (default: the '
            'shipped SDXL text-to-image workflow).'),
    Setting('COMFYUI_CHECKPOINT', 'sd_xl_base_1.0.safetensors', parse_text,
            'Model for {{checkpoint}}.'),
    Setting('COMFYUI_WIDTH', '1024', parse_int(16, 16384), 'Value of {{width}}.'),
    Setting('COMFYUI_HEIGHT', '1024', parse_int(16, 16384), 'Value of {{height}}.'),
    Setting('COMFYUI_STEPS', '30', parse_int(1, 10000), 'Value of {{steps}}.'),
    Setting('COMFYUI_CFG', '7.0', parse_float(0, 100), 'Value of {{cfg}}.'),
    Setting('COMFYUI_TIMEOUT_MS', '300000', parse_int(1000, DAY_MS),
            'Longest wait for one ComfyUI image; the prompt is interrupted after it.'),
    Setting('MIN_SOURCE_PX', '1024', parse_int(1, 100_000),
            'Smallest short side of a generated image accepted for print.'),
    Setting('BACKGROUND', 'auto', parse_choice('auto', 'remove', 'keep'),
            'A generated image\'s plain background: remove it, keep it, or auto (remove '
            'when the border is one plain colour). Images with transparency are kept.'),
    Setting('PRINT_STYLE', '', parse_text,
            'Replaces the print suffix of generated image prompts ("isolated subject on a '
            'plain white background, ..."); also appended to a direct prompt.'),
    Setting('PRINT_MIN_DPI', '150', parse_int(1, 1200),
            'Lowest effective DPI of art at its printed size before it is upscaled.'),
    Setting('PRINT_MIN_DPI_STRICT', 'false', parse_bool,
            'Fail a design under PRINT_MIN_DPI instead of upscaling it (Lanczos, WARNING).'),
    Setting('COMFYUI_UPSCALE_MODEL', '', parse_text,
            'Upscale model on the ComfyUI servers (e.g. RealESRGAN_x2.pth) that enlarges '
            'art under PRINT_MIN_DPI before it is placed (else Lanczos, with a WARNING).'),
    Setting('COLOUR_MIN_VISIBILITY', '0.25', parse_float(0, 1),
            'Share of a design\'s ink that must stand out from a garment colour, or the '
            'colour is disabled for that product.'),
    Setting('ENABLED_PLATFORMS', '', parse_list,
            'Publishing platforms, comma-separated: local, printify, shopify (default: '
            'those with credentials set, else local).'),
    Setting('PROMPT_WRITER', '', parse_text,
            'Who writes prompts and copy: template or llm (default: llm when an LLM is '
            'configured, else template).'),
    Setting('LLM_BASE_URL', '', parse_text,
            'OpenAI-compatible API base, e.g. https://api.openai.com/v1 or '
            'http://localhost:11434/v1 (Ollama).'),
    Setting('LLM_API_KEY', '', parse_text, 'Key for LLM_BASE_URL (Ollama needs none).',
            secret=True),
    Setting('LLM_MODEL', 'gpt-4o-mini', parse_text, 'Model at LLM_BASE_URL.'),
    Setting('ANTHROPIC_API_KEY', '', parse_text, 'Anthropic API key (used without '
            'LLM_BASE_URL).', secret=True),
    Setting('ANTHROPIC_MODEL', 'claude-sonnet-4-5', parse_text, 'Anthropic model.'),
    Setting('ANTHROPIC_API_URL', 'https://api.anthropic.com', parse_text,
            'Anthropic API base URL.'),
    Setting('LLM_TIMEOUT_MS', '60000', parse_int(1000, 3_600_000),
            'Longest wait for one LLM answer.'),
    Setting('LLM_FALLBACK', 'template', parse_choice('template', 'fail'),
            'When the LLM is down (5xx, timeout) past its retries: template writes those '
            'designs instead, with a WARNING; fail fails the job (retried later).'),
    Setting('BLOCKED_TERMS_FILE', '', parse_text,
            'Terms (trademarks, brands) refused in prompts, titles and tags, one per line '
            '(default: the shipped list).'),
    Setting('PRINTIFY_API_TOKEN', '', parse_text, 'Printify personal access token.',
            secret=True),
    Setting('PRINTIFY_SHOP_ID', '', parse_text,
            'Printify shop (default: the only shop the token sees).'),
    Setting('PRINTIFY_API_URL', 'https://api.printify.com', parse_text,
            'Printify API base URL.'),
    Setting('PRINTIFY_RATE_LIMIT', '600/60', parse_rate,
            'Printify requests per seconds, all endpoints (COUNT/SECONDS).'),
    Setting('PRINTIFY_CATALOG_RATE_LIMIT', '100/60', parse_rate,
            'Printify catalogue requests per seconds.'),
    Setting('PRINTIFY_PUBLISH_RATE_LIMIT', '200/1800', parse_rate,
            'Printify publishes per seconds.'),
    Setting('PRINTIFY_SYNC_WAIT_MS', '900000', parse_int(0, 30 * DAY_MS),
            'How long a connected Printify shop may take to sync a published product to '
            'its channel before the product is marked publish_failed.'),
    Setting('PRINTIFY_SYNC_POLL_MS', '15000', parse_int(100, DAY_MS),
            'How often products still publishing are looked at.'),
    Setting('PRINTIFY_MOCKUP_WAIT_MS', '60000', parse_int(0, DAY_MS),
            'How long after a job makes a Printify product its mockups are read again '
            '(Printify renders them after the create).'),
    Setting('SHOPIFY_STORE_URL', '', parse_text,
            'Shopify store, e.g. https://mystore.myshopify.com.'),
    Setting('SHOPIFY_ACCESS_TOKEN', '', parse_text, 'Shopify Admin API access token.',
            secret=True),
    Setting('SHOPIFY_API_VERSION', '2026-10', parse_text, 'Shopify Admin API version.'),
    Setting('SHOPIFY_WEBHOOK_SECRET', '', parse_text,
            'The Shopify app\'s secret that signs its webhooks (X-Shopify-Hmac-Sha256); '
            'POST /webhooks/shopify accepts nothing unsigned, and nothing without it.',
            secret=True),
    Setting('ORDER_HOLD', 'false', parse_bool,
            'Leave forwarded Printify orders on hold for the seller to approve in Printify '
            '(else they are sent to production).'),
    Setting('ORDER_PRIORITY', 'high', parse_choice('low', 'normal', 'high', 'urgent'),
            'The queue priority of an order job.'),
    Setting('ORDER_POLL_INTERVAL_MS', '300000', parse_int(100, DAY_MS),
            'How often Shopify\'s recent orders are read (so a missed webhook loses no '
            'order) and forwarded Printify orders are looked at (production, shipments).'),
    Setting('ORDER_NOTIFY_CUSTOMER', 'true', parse_bool,
            'Shopify e-mails the customer the tracking of each shipment.'),
    Setting('PRINTIFY_WEBHOOK_SECRET', '', parse_text,
            'The secret Printify signs its order webhooks with (X-Pfy-Signature); '
            'POST /webhooks/printify accepts nothing unsigned, and nothing without it.',
            secret=True),
    Setting('MIN_MARGIN_PERCENT', '30', parse_int(0, 1000),
            'Prices are raised to at least this margin over the platform\'s cost.'),
    Setting('DRY_RUN', 'false', parse_bool,
            'Publishers validate and record the requests they would send, and send no write.'),
    Setting('PRODUCT_TYPES_FILE', '', parse_text,
            'JSON file adding or changing product types (default: tshirt, hoodie).'),
    Setting('CUSTOM_HANDLERS', '', parse_list,
            'Modules defining HANDLERS for custom jobs, comma-separated.'),
    Setting('METRICS_INTERVAL_MS', '10000', parse_int(100, DAY_MS),
            'How often the metrics event is broadcast.'),
    Setting('HEALTH_CHECK_INTERVAL_MS', '30000', parse_int(100, DAY_MS),
            'How often backends are probed for /health.'),
    Setting('HEALTH_WINDOW_MS', str(15 * 60_000), parse_int(1000, DAY_MS),
            'Jobs finished within this time make the failure rate /health judges.'),
    Setting('HEALTH_MIN_SAMPLE', '10', parse_int(1, 10_000),
            'Finished jobs (in the window) needed before their failure rate can make '
            '/health unhealthy.'),
    Setting('CLEANUP_MAX_AGE_MS', str(7 * DAY_MS), parse_int(0, 3650 * DAY_MS),
            'Finished jobs older than this are removed by the scheduled cleanup.'),
    Setting('CLEANUP_INTERVAL_MS', '3600000', parse_int(1000, DAY_MS),
            'How often the scheduled cleanup runs.'),
    Setting('PUBLISH_CONCURRENCY', '4', parse_int(1, 64),
            'Designs of one job published at once, while the next designs are drawn.'),
    Setting('MAX_JOB_LOGS', '200', parse_int(10, 10_000),
            'Log lines kept per job (the newest).'),
    Setting('MAX_BODY_BYTES', '1048576', parse_int(1024, 100 * 2**20),
            'Largest request body accepted.'),
    Setting('SHUTDOWN_GRACE_MS', '30000', parse_int(0, 3_600_000),
            'How long a stop lets running jobs finish before interrupting them.'),
    Setting('ENABLE_MONITORING', 'true', parse_bool,
            'Broadcast metrics and probe backends on a schedule.'),
    Setting('LOG_LEVEL', 'INFO', parse_log_level, 'DEBUG, INFO, WARNING or ERROR.'),
    Setting('LOG_FORMAT', 'text', parse_choice('text', 'json'),
            'text, or json: one JSON object per line with time, level, logger, message '
            'and jobId.'),
)


class Settings:
    """Parsed settings; attribute names are the lower-case setting names."""

    def __init__(self, values):
        for name, value in values.items():
            setattr(self, name.lower(), value)
        self.data_path = Path(self.data_dir).resolve()


def read_env_file(path):
    """KEY=VALUE lines of a .env file; blank lines and # comments skipped."""
    values = {}
    if not path or not os.path.isfile(path):
        return values
    with open(path, encoding='utf-8') as lines:
        for line in lines:
            line = line.strip()
            if line and not line.startswith('#') and '=' in line:
                key, _, value = line.partition('=')
                values[key.strip().removeprefix('export ')] = value.strip().strip('\'"')
    return values


def load_settings(environ=None, env_file=None):
    """Settings from ``environ`` over the .env file over the defaults."""
    environ = os.environ if environ is None else environ
    raw = read_env_file(env_file or environ.get('ENV_FILE', '.env'))
    raw.update(environ)
    values = {}
    for setting in SETTINGS:
        text = raw.get(setting.name, setting.default)
        try:
            values[setting.name] = setting.parse(text)
        except ValueError as exc:
            raise ConfigError(f'{setting.name}: {exc}') from None
    return Settings(values)


def env_example():
    """The text of .env.example, made from the settings table."""
    lines = ['# POD Engine settings. Copy to .env; the environment wins over it.', '']
    for setting in SETTINGS:
        lines += [f'# {setting.help}', f'{setting.name}={setting.default}', '']
    return '\n'.join(lines)


###############################################################################
# Errors ######################################################################
###############################################################################

class StoreError(PodEngineError):
    """The job store cannot be read or written."""


class ApiError(PodEngineError):
    """An error answered to an HTTP client as ``{"error": message}``."""
    status = 400


class ValidationError(ApiError):
    """The request is not one the API takes: the message says why."""
    status = 400


class NotFound(ApiError):
    """No such job (or design, or file)."""
    status = 404


class Conflict(ApiError):
    """The job is in a state that does not allow the action."""
    status = 400


class PayloadTooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class Unauthorized(ApiError):
    status = 401


class Unavailable(ApiError):
    """The engine cannot take the request now (stopping, or the disk refused it)."""
    status = 503


class JobFailure(PodEngineError):
    """A job attempt failed. ``result`` keeps what was made before it did."""

    def __init__(self, message, *, retryable=True, result=None):
        super().__init__(message)
        self.retryable = retryable
        self.result = result


def as_job_failure(exc):
    """Classify anything an attempt raised: will trying again help?"""
    if isinstance(exc, JobFailure):
        return exc
    if isinstance(exc, AdapterError):
        return JobFailure(str(exc), retryable=exc.retryable)
    # StoreError: the disk refused a checkpoint, not the job a step.
    transient = (requests.RequestException, OSError, gevent.Timeout, StoreError)
    if isinstance(exc, transient):
        return JobFailure(f'{type(exc).__name__}: {exc}', retryable=True)
    # Anything else is a bug or bad input in a handler: the same call would
    # fail the same way, so do not spend the retry budget on it.
    return JobFailure(f'{type(exc).__name__}: {exc}', retryable=False)


###############################################################################
# Events ######################################################################
###############################################################################

JOB_UPDATE = 'job:update'
JOB_PROGRESS = 'job:progress'
JOB_REMOVED = 'job:removed'
METRICS = 'metrics'
LOG = 'log'


class EventBus:
    """Fans each event out to its listeners: Socket.IO, /ws, tests.

    A listener is ``fn(event, data)``; one that raises is logged and the
    others still get the event.
    """

    def __init__(self):
        self._listeners = []

    def add_listener(self, listener):
        self._listeners.append(listener)

    def remove_listener(self, listener):
        self._listeners.remove(listener)

    def emit(self, event, data):
        for listener in list(self._listeners):
            try:
                listener(event, data)
            except Exception:
                log.exception('event listener %r failed on %s', listener, event)


###############################################################################
# Requests: what a job may ask for ############################################
###############################################################################

PENDING, RUNNING, COMPLETED, FAILED, CANCELLED = (
    'pending', 'running', 'completed', 'failed', 'cancelled')
STATUSES = (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED)
FINISHED = (COMPLETED, FAILED, CANCELLED)
PRIORITY_RANK = {'urgent': 0, 'high': 1, 'normal': 2, 'low': 3}

WEB_DIR = Path(__file__).resolve().parent / 'web'
DEFAULT_PRODUCT_TYPES = {
    'tshirt': {'name': 'T-Shirt', 'price': 19.99,
               'sizes': ['S', 'M', 'L', 'XL', '2XL', '3XL'],
               'colors': ['Black', 'White', 'Navy', 'Heather Grey'],
               'extra': {'printify': {'brand': 'Bella+Canvas', 'model': '3001',
                                      'provider': 'Monster Digital'}}},
    'hoodie': {'name': 'Hoodie', 'price': 34.99,
               'sizes': ['S', 'M', 'L', 'XL', '2XL', '3XL'],
               'colors': ['Black', 'Navy', 'Sport Grey'],
               'extra': {'printify': {'brand': 'Gildan', 'model': '18500',
                                      'provider': 'Monster Digital'}}},
}


def load_product_types(path):
    """The product catalogue: the defaults, changed or extended by ``path``."""
    entries = {key: dict(value) for key, value in DEFAULT_PRODUCT_TYPES.items()}
    if path:
        try:
            with open(path, encoding='utf-8') as file:
                extra = json.load(file)
        except (OSError, ValueError) as exc:
            raise ConfigError(f'PRODUCT_TYPES_FILE: cannot read {path}: {exc}') from None
        if not isinstance(extra, dict):
            raise ConfigError('PRODUCT_TYPES_FILE: expected a JSON object of product types')
        for key, value in extra.items():
            entries[key] = {**entries.get(key, {}), **value}
    try:
        types = {key: ProductType(key=key, **value) for key, value in entries.items()}
    except TypeError as exc:
        raise ConfigError(f'PRODUCT_TYPES_FILE: {exc}') from None
    for product_type in types.values():
        if product_type.placement not in printready.PLACEMENTS:
            raise ConfigError(f'PRODUCT_TYPES_FILE: {product_type.key}.placement must be one '
                              f'of {", ".join(printready.PLACEMENTS)}')
    return types


API_DOCUMENT = Path(__file__).resolve().parent / 'api' / 'openapi.json'
TYPE_WORDS = {'object': 'a JSON object', 'array': 'a list', 'string': 'a string',
              'integer': 'an integer', 'number': 'a number', 'boolean': 'true or false'}


class RequestSchemas:
    """The API's OpenAPI document, and the request checks made from it.

    One file (api/openapi.json) is both: GET /api/openapi.json serves it, and
    every request body is validated against its schemas, so the documentation
    and the checks cannot drift. The product types and handler names of this
    engine are filled into it at start-up.
    """

    def __init__(self, product_types, handlers, path=API_DOCUMENT):
        self.document = json.loads(path.read_text(encoding='utf-8'))
        schemas = self.document['components']['schemas']
        schemas['ProductType']['enum'] = sorted(product_types)
        schemas['HandlerName']['enum'] = sorted(handlers)
        self._components = with_python_patterns(self.document['components'])
        self._fits = {}        # schema name -> quickcheck function, or None
        self._validators = {}  # schema name -> jsonschema validator

    def check(self, name, data, where=''):
        """Raise ValidationError, naming the field, unless ``data`` fits schema ``name``."""
        fits = self._quick_check(name)
        if fits is not None and fits(data):
            return data
        errors = list(self._validator(name).iter_errors(data))
        if errors:
            raise ValidationError(describe_error(best_match(errors), where))
        return data

    def defaults(self, name):
        """The ``default`` of each property of schema ``name`` that has one."""
        schemas = self.document['components']['schemas']
        found = {}
        for key, prop in schemas[name].get('properties', {}).items():
            target = schemas[prop['$ref'].rsplit('/', 1)[-1]] if '$ref' in prop else prop
            if 'default' in target:
                found[key] = target['default']
        return found

    def _quick_check(self, name):
        """Schema ``name`` compiled to one function (adapters/quickcheck.py):
        what it accepts, jsonschema accepts, in a tenth of the time; what it
        refuses goes to jsonschema, whose errors are the ones users read."""
        if name not in self._fits:
            try:
                self._fits[name] = quickcheck.compile_schema(
                    self._components['schemas'][name], self._components['schemas'])
            except quickcheck.Unsupported as exc:
                log.debug('schema %s is checked by jsonschema alone: %s', name, exc)
                self._fits[name] = None
        return self._fits[name]

    def _validator(self, name):
        if name not in self._validators:
            # Only refusals come here (see check): they need its words, not its speed.
            self._validators[name] = Draft202012Validator(
                {'$ref': f'#/components/schemas/{name}', 'components': self._components})
        return self._validators[name]


def with_python_patterns(value):
    """A copy of ``value`` with each closing ``$`` of a ``pattern`` spelled ``\\Z``.

    In JSON Schema (ECMA 262) a closing ``$`` is the end of the string; in
    Python's ``re`` it also matches before a final newline, so ``"5\\n"`` would
    pass ``^[0-9]{1,15}$`` here and fail for every other reader of the document.
    """
    if isinstance(value, list):
        return [with_python_patterns(item) for item in value]
    if not isinstance(value, dict):
        return value
    copied = {key: with_python_patterns(item) for key, item in value.items()}
    pattern = copied.get('pattern')
    if isinstance(pattern, str) and pattern.endswith('$') and not pattern.endswith('\\$'):
        copied['pattern'] = pattern[:-1] + '\\Z'
    return copied


def describe_error(error, where=''):
    """A jsonschema error as a sentence that names the field."""
    path = where + dotted(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    custom = schema.get(f'x-error-{error.validator}') or schema.get('x-error')
    if not custom and error.parent is not None:  # a branch of anyOf: its owner speaks
        owner = error.parent.schema if isinstance(error.parent.schema, dict) else {}
        custom, schema = owner.get('x-error'), owner
    if custom:
        return custom.format(path=path or 'body', prefix=f'{path}.' if path else '',
                             value=error.instance, enum=', '.join(schema.get('enum', [])))
    return describe_by_kind(error, path or 'body', schema)


def describe_by_kind(error, path, schema):
    kind, expected = error.validator, error.validator_value
    if kind == 'required':
        return f'{joined(path, error.message.split(chr(39))[1])} is required'
    if kind == 'additionalProperties':
        extra = sorted(set(error.instance) - set(schema.get('properties', {})))[0]
        return (f'{joined(path, extra)}: unknown field (allowed: '
                f'{", ".join(schema.get("properties", {}))})')
    if kind in ('type', 'minimum', 'maximum') and 'minimum' in schema and 'maximum' in schema:
        noun = 'an integer' if 'integer' in str(schema.get('type')) else 'a number'
        return f'{path} must be {noun} from {schema["minimum"]} to {schema["maximum"]}'
    if kind == 'type':
        kinds = [expected] if isinstance(expected, str) else expected
        return f'{path} must be ' + ' or '.join(TYPE_WORDS[k] for k in kinds if k != 'null')
    if kind == 'enum':
        return f'{path} must be one of {", ".join(map(str, expected))}'
    if kind in ('minLength', 'pattern'):
        return f'{path} must be a non-empty string'
    if kind == 'maxLength':
        return f'{path} must be at most {expected} characters'
    if kind == 'minItems':
        return f'{path} must be a non-empty list'
    if kind == 'maxItems':
        return f'{path} must hold at most {expected} items'
    if kind == 'uniqueItems':
        return f'{path} must not repeat an item'
    return f'{path}: {error.message[:200]}'


def dotted(parts):
    """``['items', 1, 'productTypes']`` as ``items[1].productTypes``."""
    text = ''
    for part in parts:
        text += f'[{part}]' if isinstance(part, int) else f'.{part}'
    return text.lstrip('.')


def joined(path, name):
    return name if path == 'body' else f'{path}.{name}'


###############################################################################
# Store: jobs in memory, durable on disk ######################################
###############################################################################

class JobStore:
    """Where jobs live between restarts.

    ``open`` returns the job table, a dict of job id to job that the engine
    then owns. The engine tells the store about each change; the store makes
    it durable. ``save`` and ``delete`` return a waitable: ``.get()`` returns
    once the change is on disk (or raises StoreError). A store may swap a
    finished job's dict in the table for an ArchivedJob, which keeps the few
    fields the engine filters on in memory and reads the rest back from disk.

    ``commits`` counts the fsyncs that made changes durable and ``changes``
    the changes they carried (both 0 in a store that writes nothing).
    """

    commits = changes = 0

    def open(self):
        """Load what is stored.

        :return: ``(jobs, meta)``: the job table, in the order the jobs were
            created, and the engine's counters (a dict, empty when nothing
            is stored)
        :raises StoreError: when stored data exists but cannot be read
        """
        raise NotImplementedError

    def save(self, job, public=None):
        """Store the current state of ``job`` (a JSON-serialisable dict);
        ``public``, when given, is ``public_json(job)`` already encoded."""
        raise NotImplementedError

    def save_checkpoint(self, job, key):
        """Store the job's checkpoint ``key`` as ``job['checkpoints']`` holds
        it, or its absence: one step, not the whole job."""
        raise NotImplementedError

    def delete(self, job_id):
        """Forget a job."""
        raise NotImplementedError

    def save_meta(self, meta):
        """Store the engine's counters."""
        raise NotImplementedError

    def problem(self):
        """Why the store cannot keep what it is given (its last write failed),
        or None."""
        return None

    def shown(self, job_id):
        """While a change to the job is still on its way to disk: the job as
        users saw it last on disk, as JSON text ('' if it never was there).
        Else the job's public JSON as saved, when the store has it and it is
        current (a finished job changes only through a save), or None: then
        what memory holds is on disk and is encoded anew."""
        return None

    def close(self):
        """Make everything durable and release the files."""


class Done:
    """An already-finished waitable."""

    def get(self, timeout=None):
        return None


class MemoryStore(JobStore):
    """ENABLE_PERSISTENCE=false: nothing outlives the process."""

    def open(self):
        return JobTable(archive=None), {}

    def save(self, job, public=None):
        return Done()

    def save_checkpoint(self, job, key):
        return Done()

    def delete(self, job_id):
        return Done()

    def save_meta(self, meta):
        return Done()


def archive_line(job, public, checkpoints):
    """The archive's line for a finished job, from its two JSON texts."""
    summary = json.dumps({field: job.get(field) for field in ArchivedJob.FIELDS})
    return f'{summary}\t{public}\t{checkpoints}\n'.encode('utf-8')


class ArchivedJob:
    """A finished job whose record is on disk, in the archive.

    Reading ``job['status']`` and the other summary fields costs nothing;
    ``public_text`` and ``load`` read the record back. Made on demand around
    the job's entry in the table: a plain tuple of strings and numbers, which
    the garbage collector stops tracking. (With one object per finished job,
    each full collection took 44 ms at 100k jobs, and stalled every request.)
    """

    FIELDS = ('id', 'type', 'status', 'priority', 'createdAt', 'completedAt')
    INDEX = {field: index for index, field in enumerate(FIELDS)}
    __slots__ = ('entry', 'archive')

    def __init__(self, entry, archive):
        self.entry = entry  # FIELDS, then segment, offset, public size, checkpoints size
        self.archive = archive

    @staticmethod
    def entry_of(item, segment):
        """The table's entry for an index item (see Archive) in ``segment``."""
        # Interned: 100k finished jobs share a handful of these strings.
        job_id, job_type, status, priority, created, completed, offset, public_size, \
            checkpoints_size, _ = item
        return (job_id, sys.intern(job_type), sys.intern(status), sys.intern(priority),
                created, completed, segment, offset, public_size, checkpoints_size)

    def __getitem__(self, key):
        return self.entry[self.INDEX[key]]

    def public_text(self):
        """The job as users see it, logs included: JSON bytes."""
        segment, offset, public_size = self.entry[6:9]
        return self.archive.read(segment, offset, public_size)

    def load(self):
        """The whole job as a dict, checkpoints included."""
        segment, offset, public_size, checkpoints_size = self.entry[6:]
        text = self.archive.read(segment, offset, public_size + 1 + checkpoints_size)
        job = json.loads(text[:public_size])
        job['checkpoints'] = json.loads(text[public_size + 1:])
        return job


class JobTable:
    """The jobs by id, in the order they were created: live jobs as their
    dicts, finished ones as archive entries, handed out as ArchivedJob.

    The order is kept in a dict of archive entries, with None for a live job
    (whose dict is in ``_live``): holding only strings, tuples and None, it
    is one the garbage collector stops tracking, so 100k finished jobs add
    next to nothing to a full collection.
    """

    def __init__(self, archive, values=()):
        """``values``: job dicts and archive entries, in the order to keep."""
        self.archive = archive
        self._order = {}
        self._live = {}
        for value in values:
            if type(value) is tuple:
                self._order[value[0]] = value
            else:
                self[value['id']] = value

    def _job(self, job_id, entry):
        return self._live[job_id] if entry is None else ArchivedJob(entry, self.archive)

    def __getitem__(self, job_id):
        return self._job(job_id, self._order[job_id])

    def get(self, job_id, default=None):
        return self[job_id] if job_id in self._order else default

    def __setitem__(self, job_id, job):
        if isinstance(job, ArchivedJob):
            self._order[job_id] = job.entry
            self._live.pop(job_id, None)
        else:
            self._order[job_id] = None
            self._live[job_id] = job

    def __delitem__(self, job_id):
        del self._order[job_id]
        self._live.pop(job_id, None)

    def pop(self, job_id, *default):
        if job_id not in self._order and default:
            return default[0]
        job = self[job_id]
        del self[job_id]
        return job

    def __contains__(self, job_id):
        return job_id in self._order

    def __len__(self):
        return len(self._order)

    def __iter__(self):
        return iter(self._order)

    def values(self):
        return (self._job(job_id, entry) for job_id, entry in self._order.items())

    def items(self):
        return ((job_id, self._job(job_id, entry)) for job_id, entry in self._order.items())

    def live(self):
        """The jobs kept as dicts: all but the archived ones."""
        return list(self._live.values())

    def find(self, status=None, newest=False, offset=0, limit=None, job_type=None):
        """The jobs (with ``status``, of ``job_type``) as they are now, oldest
        first or ``newest`` first, from ``offset``, at most ``limit``: a JobList."""
        items = reversed(self._order.items()) if newest else iter(self._order.items())
        values = (self._live[job_id] if entry is None else entry for job_id, entry in items)
        if status is not None:
            values = (value for value in values if status_of(value) == status)
        if job_type is not None:
            values = (value for value in values if type_of(value) == job_type)
        stop = None if limit is None else offset + limit
        return JobList(list(itertools.islice(values, offset, stop)), self.archive)


def type_of(value):
    """The type of a job dict or an archive entry."""
    return value[1] if type(value) is tuple else value['type']


def status_of(value):
    """The status of a job dict or an archive entry."""
    return value[2] if type(value) is tuple else value['status']


def creation_order(value):
    """Sort key of a job dict or an archive entry: when it was created."""
    if type(value) is tuple:
        return value[4], value[0]
    return value['createdAt'], value['id']


class JobList:
    """Jobs taken from the table at one moment. Each is made an ArchivedJob
    only when it is read, so listing 100k jobs does not make 100k objects at
    once (which would also set off full garbage collections)."""

    __slots__ = ('_values', 'archive')

    def __init__(self, values, archive):
        self._values = values  # job dicts and archive entries
        self.archive = archive

    def _job(self, value):
        return ArchivedJob(value, self.archive) if type(value) is tuple else value

    def __len__(self):
        return len(self._values)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return JobList(self._values[index], self.archive)
        return self._job(self._values[index])

    def __iter__(self):
        return map(self._job, self._values)


class Archive:
    """Finished jobs in append-only segment files (``archive/000001.jsonl``),
    each with a small index beside it (``000001.idx``).

    Each segment line is ``summary TAB public job TAB checkpoints`` (JSON
    escapes tabs, so a raw tab only ever separates parts), or ``{"del": id}``
    to forget a job. Each index line is a JSON array: a job line's summary
    fields, where its parts are and where the line ends, or ``[id, end]`` for
    a forgetting line. Start-up reads only the indexes (about 100 bytes a
    job, where a job's line is kilobytes); the rest is read when a user asks
    for the job. An index is only ever behind its segment (written after it):
    the lines past its end are read from the segment and indexed then, so a
    crash between the two writes, or a folder from before indexes, costs one
    scan. A later line for the same job wins. A segment is removed once it
    holds no live job and no older segment is left, so a forgetting line
    never outlives the lines it forgets.
    """

    def __init__(self, folder, segment_bytes=64 << 20):
        self.dir = Path(folder)
        self.segment_bytes = segment_bytes
        self.entries = {}                 # job id -> its entry (the live lines)
        self.live = collections.Counter()  # segment number -> live lines in it
        self._readers = {}
        self._active = 1

    def path(self, segment):
        return self.dir / f'{segment:06d}.jsonl'

    def index_path(self, segment):
        return self.dir / f'{segment:06d}.idx'

    def segments(self):
        return sorted(int(path.stem) for path in self.dir.glob('*.jsonl')
                      if path.stem.isdigit())

    # Loading -----------------------------------------------------------------

    def open(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        numbers = self.segments()
        for segment in numbers:
            self._load(segment, last=segment == numbers[-1])
        self._active = numbers[-1] if numbers else 1
        return self.entries

    def _load(self, segment, last):
        indexed, end = self._read_index(segment)
        if end < self.path(segment).stat().st_size:
            unindexed = self._scan(segment, end, last)
            if unindexed:
                self._write_index(segment, unindexed)
            indexed += unindexed
        for item in indexed:
            if len(item) == 2:
                self.forget(item[0])
            else:
                self._add(ArchivedJob.entry_of(item, segment))

    def _read_index(self, segment):
        """The index's items and the segment offset they reach. An index that
        is torn, unreadable or longer than its segment is rebuilt: it holds
        nothing the segment does not."""
        path = self.index_path(segment)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return [], 0
        whole = data[:data.rfind(b'\n') + 1]
        try:
            items = json.loads(b'[%s]' % whole.rstrip(b'\n').replace(b'\n', b','))
        except ValueError:
            items = None
        if items is None or (items and items[-1][-1] > self.path(segment).stat().st_size):
            log.warning('rebuilding %s from its segment (it was unreadable)', path)
            path.unlink()
            return [], 0
        if len(whole) < len(data):
            with open(path, 'r+b') as file:  # a crash cut its last line short
                file.truncate(len(whole))
        return items, items[-1][-1] if items else 0

    def _scan(self, segment, start, last):
        """The index items of the segment's lines from offset ``start`` on."""
        path = self.path(segment)
        summaries, places = [], []
        offset = start
        with open(path, 'rb') as file:
            file.seek(start)
            for line in file:
                if not line.endswith(b'\n'):
                    self._cut_torn_line(path, offset, last)
                    break
                try:
                    summary, place = split_line(line, offset)
                except ValueError:
                    raise StoreError(f'{path} line {len(summaries) + 1} from byte {start} is '
                                     f'unreadable; refusing to start and leaving it '
                                     f'untouched') from None
                offset += len(line)
                summaries.append(summary)
                places.append((place, offset))
        return [index_item(summary, place, end) for summary, (place, end)
                in zip(self._parse(summaries, path, start), places)]

    @staticmethod
    def _parse(summaries, path, start):
        """All of a segment's summaries at once: one parse, not one per line."""
        try:
            return json.loads(b'[%s]' % b','.join(summaries))
        except ValueError:
            for number, summary in enumerate(summaries, 1):
                try:
                    json.loads(summary)
                except ValueError:
                    raise StoreError(f'{path} line {number} from byte {start} is '
                                     f'unreadable; refusing to start and leaving it '
                                     f'untouched') from None
            raise

    @staticmethod
    def _cut_torn_line(path, offset, last):
        """The last append was cut short by a crash: drop its partial line."""
        if not last:
            raise StoreError(f'{path} ends in a torn line; refusing to start '
                             f'and leaving it untouched')
        log.warning('ignored a torn last line in %s (a crash mid-write)', path)
        with open(path, 'r+b') as file:
            file.truncate(offset)
            os.fsync(file.fileno())

    def _add(self, entry):
        self.forget(entry[0])
        self.entries[entry[0]] = entry
        self.live[entry[6]] += 1

    def forget(self, job_id):
        """The job's line is no longer live (it was deleted or runs again)."""
        entry = self.entries.pop(job_id, None)
        if entry is not None:
            self.live[entry[6]] -= 1

    # Writing -----------------------------------------------------------------

    def append(self, lines, forgotten):
        """Append job lines and forgetting lines and fsync them, then their
        index (blocking: run it in a thread). Returns ``(segment, offset)`` of
        each job line."""
        lines = list(lines) + [b'{"del":%s}\n' % json.dumps(job_id).encode()
                               for job_id in forgotten]
        if not lines:
            return []
        segment, path = self._active, self.path(self._active)
        created = not path.exists()
        with open(path, 'ab', buffering=0) as file:
            start = offset = append_whole(file, b''.join(lines))
            places, items = [], []
            for line in lines:
                summary, place = split_line(line, offset)
                places.append((segment, offset))
                offset += len(line)
                items.append(index_item(json.loads(summary), place, offset))
            try:
                self._write_index(segment, items)
            except OSError:
                file.truncate(start)  # not indexed: as if never appended
                raise
        if created:
            fsync_dir(self.dir)
        if offset >= self.segment_bytes:
            self._active += 1
        return places

    def _write_index(self, segment, items):
        with open(self.index_path(segment), 'ab', buffering=0) as file:
            append_whole(file, b''.join(b'%s\n' % json.dumps(item).encode() for item in items))

    def add(self, line, segment, offset):
        """Make an appended line live; returns its ArchivedJob."""
        summary, place = split_line(line, offset)
        entry = ArchivedJob.entry_of(index_item(json.loads(summary), place, 0), segment)
        self._add(entry)
        return ArchivedJob(entry, self)

    def dead_segments(self):
        """The oldest segments, up to the first that holds a live job."""
        dead = []
        for segment in self.segments():
            if segment >= self._active or self.live[segment] > 0:
                break
            dead.append(segment)
        return dead

    def drop(self, segments):
        for segment in segments:
            reader = self._readers.pop(segment, None)
            if reader is not None:
                os.close(reader)
            self.path(segment).unlink(missing_ok=True)
            self.index_path(segment).unlink(missing_ok=True)
            self.live.pop(segment, None)

    # Reading -----------------------------------------------------------------

    def read(self, segment, offset, size):
        reader = self._readers.get(segment)
        if reader is None:
            reader = self._readers[segment] = os.open(self.path(segment), os.O_RDONLY)
        return os.pread(reader, size, offset)

    def close(self):
        for reader in self._readers.values():
            os.close(reader)
        self._readers.clear()


class DocumentTable(Table):
    """A TinyDB table whose documents are keyed by their own ids (job ids),
    and whose writes reach the storage as the documents they changed."""

    document_id_class = str

    def _update_table(self, updater):
        # TinyDB's own copies the whole table around each write and hands the
        # storage the whole database: a write would cost as much as the queue.
        # (Its private hook; tinydb is pinned.)
        documents = Touched(self._storage.read().setdefault(self.name, {}))
        updater(documents)
        self._storage.changed(self.name, documents.ids)
        self.clear_cache()


class Touched:
    """A table's documents as TinyDB's updaters use them, noting which they
    touch (an updater changes a document it reads in place)."""

    def __init__(self, documents):
        self.documents = documents
        self.ids = []

    def __contains__(self, doc_id):
        return doc_id in self.documents

    def __getitem__(self, doc_id):
        self.ids.append(doc_id)
        return self.documents[doc_id]

    def __setitem__(self, doc_id, document):
        self.ids.append(doc_id)
        self.documents[doc_id] = document

    def __delitem__(self, doc_id):
        self.ids.append(doc_id)
        del self.documents[doc_id]

    def pop(self, doc_id, *default):
        self.ids.append(doc_id)
        return self.documents.pop(doc_id, *default)

    def keys(self):
        return self.documents.keys()

    def clear(self):
        self.ids.extend(self.documents)
        self.documents.clear()


class JobDatabase(TinyDB):
    table_class = DocumentTable


class JournalStorage(Storage):
    """TinyDB's storage for the live jobs: the database in memory, each
    changed document one line of ``journal.jsonl``, and the whole database
    in ``jobs.json`` (TinyDB's own JSON layout) as of the last compaction.

    Lines wait in ``lines`` until the store's writer appends them (``append``);
    ``write_snapshot`` then ``restart_journal`` compact. A crash leaves the
    snapshot, old or new, and whole journal lines (a torn last one is
    dropped), so ``load`` gets back every change that was appended.
    """

    def __init__(self, folder):
        self.dir = Path(folder)
        self.snapshot_path = self.dir / 'jobs.json'
        self.journal_path = self.dir / 'journal.jsonl'
        self.tables = {}  # table name -> document id -> document
        self.texts = {}   # table name -> document id -> its JSON, as last written
        self.lines = []   # journal lines to append
        self.forgotten = set()  # jobs deleted (not just archived) in the journal
        self.encoded = {}  # (table, document id) -> its JSON, encoded by the caller
        self._journal = None

    def read(self):
        return self.tables

    def size(self):
        """How many documents the database holds: what a compaction writes."""
        return sum(map(len, self.tables.values()))

    def write(self, tables):
        raise TypeError('JournalStorage is written one document at a time (DocumentTable)')

    def changed(self, table, doc_ids):
        documents = self.tables[table]
        texts = self.texts.setdefault(table, {})
        for doc_id in dict.fromkeys(doc_ids):
            name = json.dumps([table, doc_id])
            if doc_id in documents:
                text = texts[doc_id] = (self.encoded.pop((table, doc_id), None)
                                        or json.dumps(documents[doc_id]))
                self.lines.append(f'{{"put":{name[:-1]},{text}]}}\n'.encode('utf-8'))
            elif texts.pop(doc_id, None) is not None:
                self.lines.append(f'{{"drop":{name}}}\n'.encode('utf-8'))

    def forget(self, job_id):
        """Journal that a job was deleted: unlike a drop, this reaches the archive."""
        self.lines.append(b'{"del":%s}\n' % json.dumps(job_id).encode())

    # Loading -----------------------------------------------------------------

    def load(self):
        """Read the snapshot and replay the journal; True when the journal's
        last line was torn (a crash mid-write)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tables = self._read_snapshot()
        torn = self._replay()
        self.texts = {}
        self._journal = open(self.journal_path, 'ab', buffering=0)
        return torn

    def _read_snapshot(self):
        if not self.snapshot_path.exists():
            return {}
        try:
            tables = json.loads(self.snapshot_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise StoreError(f'{self.snapshot_path} is unreadable ({exc}); refusing to start '
                             f'and leaving it untouched. Move it aside to start '
                             f'with an empty store.') from None
        return migrated(tables)

    def _replay(self):
        if not self.journal_path.exists():
            return False
        lines = self.journal_path.read_bytes().split(b'\n')
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                if number == len(lines):  # a write cut short by a crash
                    return True
                raise StoreError(f'{self.journal_path} line {number} is unreadable; '
                                 f'refusing to start and leaving it untouched') from None
            self._apply(entry)
        return False

    def _apply(self, entry):
        if 'put' in entry and isinstance(entry['put'], dict):  # a line from before tables
            entry = {'put': ['jobs', entry['put']['id'], entry['put']]}
        if 'meta' in entry:
            entry = {'put': ['meta', 'engine', entry['meta']]}
        if 'put' in entry:
            table, doc_id, document = entry['put']
            if table == 'jobs':
                self._put_job(doc_id, document)
            else:
                self.tables.setdefault(table, {})[doc_id] = document
        elif 'drop' in entry:
            table, doc_id = entry['drop']
            self.tables.get(table, {}).pop(doc_id, None)
        elif 'del' in entry:  # its documents' drops are lines of their own
            self.forgotten.add(entry['del'])

    def _put_job(self, job_id, document):
        checkpoints = document.pop('checkpoints', None)
        self.tables.setdefault('jobs', {})[job_id] = document
        if checkpoints is not None:  # an old line: the job's checkpoints inside
            for key, value in checkpoints.items():
                self.tables.setdefault('checkpoints', {})[checkpoint_id(job_id, key)] = {
                    'job': job_id, 'key': key, 'value': value}

    # Writing -----------------------------------------------------------------

    def take(self):
        lines, self.lines = self.lines, []
        return b''.join(lines)

    def append(self, data):
        """Append journal lines and fsync them (blocking: run it in a thread)."""
        append_whole(self._journal, data)

    def text(self, table, doc_id):
        """A document's JSON as last written (encoded now if it was loaded)."""
        texts = self.texts.setdefault(table, {})
        if doc_id not in texts:
            texts[doc_id] = json.dumps(self.tables[table][doc_id])
        return texts[doc_id]

    def snapshot(self, leaving):
        """The database as JSON, but for the documents ``leaving`` (table
        name -> ids), built from the text each document was written as: no
        document is encoded (but those loaded and not written since), and
        nothing can change under the thread that writes it."""
        parts = []
        for table, documents in self.tables.items():
            skip = leaving.get(table, ())
            body = ','.join('%s:%s' % (json.dumps(doc_id), self.text(table, doc_id))
                            for doc_id in documents if doc_id not in skip)
            parts.append('%s:{%s}' % (json.dumps(table), body))
        return '{%s}' % ','.join(parts)

    def write_snapshot(self, text):
        write_atomically(self.snapshot_path, text.encode('utf-8'))

    def restart_journal(self):
        self._journal.close()
        self.journal_path.write_bytes(b'')
        fsync_dir(self.dir)
        self._journal = open(self.journal_path, 'ab', buffering=0)

    def close(self):
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def checkpoint_id(job_id, key):
    """A checkpoint's document id: job ids hold no space."""
    return f'{job_id} {key}'


def migrated(tables):
    """A snapshot from before checkpoints had their table (its jobs under
    TinyDB's numbers, each with its checkpoints inside), in today's layout."""
    meta = tables.get('meta', {})
    if meta and 'engine' not in meta:
        tables['meta'] = {'engine': next(iter(meta.values()))}
    jobs = tables.get('jobs', {})
    if all(job_id == job.get('id') and 'checkpoints' not in job
           for job_id, job in itertools.islice(jobs.items(), 1)):
        return tables
    checkpoints = tables.setdefault('checkpoints', {})
    tables['jobs'] = {}
    for job in jobs.values():
        for key, value in job.pop('checkpoints', {}).items():
            checkpoints[checkpoint_id(job['id'], key)] = {'job': job['id'], 'key': key,
                                                          'value': value}
        tables['jobs'][job['id']] = job
    return tables



def index_item(summary, place, end):
    """The archive index's item for a segment line that ends at ``end``:
    ``[id, end]`` for a forgetting line (``place`` None)."""
    if place is None:
        return [summary['del'], end]
    return [*(summary[field] for field in ArchivedJob.FIELDS), *place, end]


def split_line(line, offset):
    """An archive line (newline included) that starts at ``offset``: its
    summary, and where its public job starts, that part's size and the
    checkpoints' size (None for a forgetting line)."""
    first = line.find(b'\t')
    if first < 0:
        return line, None
    second = line.index(b'\t', first + 1)  # ValueError: a part is missing
    return line[:first], (offset + first + 1, second - first - 1, len(line) - second - 2)


def append_whole(file, data):
    """Append ``data`` (whole lines) to an unbuffered file and fsync it, or
    nothing: a write cut short (disk full) is truncated away, so a file never
    holds half a line mid-file. Returns the offset ``data`` starts at."""
    start = file.seek(0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            view = view[file.write(view):]
        os.fsync(file.fileno())
    except OSError:
        file.truncate(start)
        raise
    return start


def write_atomically(path, data):
    """Replace ``path`` with ``data`` so a crash leaves the old or the new."""
    temp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    with open(temp, 'wb') as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)
    fsync_dir(path.parent)


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


STORE_PROBLEM_S = 60  # /health reports a refused write for this long after it


class JournalStore(JobStore):
    """Live jobs in a TinyDB database made durable by a journal; finished
    jobs moved to the archive.

    The database has three tables: ``jobs`` (each live job as users see it,
    by id), ``checkpoints`` (one document per step a job has done, so a
    checkpoint writes itself and not the job) and ``meta`` (the engine's
    counters). Each write is one line of the journal (JournalStorage). One
    writer greenlet appends whatever lines have queued up and fsyncs once for
    all of them (group commit), so many concurrent submits share one fsync
    and the cost of a change does not grow with the number of stored jobs.
    After ``compact_every`` lines, or as many lines as there are live jobs if
    that is more (a queue of 30,000 pending jobs is not rewritten every 2,500
    submits: a compaction's cost is spread over as many changes as it
    writes), the store compacts: jobs that finished since the last time are
    appended to the archive and leave the database and memory (the table
    gets an ArchivedJob in their place), the database is written to
    ``jobs.json`` and the journal starts over. Compaction so costs as much as
    the live jobs, never as much as the whole history, and memory holds the
    live jobs plus a small summary of each finished one.
    """

    def __init__(self, data_dir, compact_every=5000):
        self.dir = Path(data_dir)
        self.db = JobDatabase(self.dir, storage=JournalStorage)
        self.storage = self.db.storage
        self.live_jobs = self.db.table('jobs')
        self.checkpoints = self.db.table('checkpoints')
        self.meta = self.db.table('meta')
        self.archive = Archive(self.dir / 'archive')
        self.compact_every = compact_every
        self.jobs = JobTable(self.archive)
        self._keys = collections.defaultdict(set)  # live job id -> its checkpoints' keys
        self._finished = {}      # job id -> its public JSON as it finished: to archive next
        self._failed = None      # (when, why) the last write failed
        self._on_disk = {}       # live job id -> its public JSON as last on disk
        self._unsynced = collections.Counter()  # live job id -> saves not on disk yet
        self._saved = []         # (job id, public JSON) of each save not appended yet
        self._forgotten = set()  # deleted since the last compaction
        self._batch = gevent.event.AsyncResult()
        self._wakeup = gevent.event.Event()
        self._since_compact = 0
        self._closing = False
        self._writer = None
        self._compacting = gevent.lock.Semaphore()

    # Loading -----------------------------------------------------------------

    def open(self):
        archived = self.archive.open()
        torn = self.storage.load()
        for job_id in self.storage.forgotten:
            self.archive.forget(job_id)
        self._forgotten |= self.storage.forgotten
        live = self._read_live_jobs()
        for job_id in live:
            self.archive.forget(job_id)  # its live state is newer
            if live[job_id]['status'] in FINISHED:  # not archived before the crash
                self._finished[job_id] = self.storage.text('jobs', job_id)
        self.jobs = JobTable(self.archive, sorted(
            [*archived.values(), *live.values()], key=creation_order))
        meta = self.meta.get(doc_id='engine')
        self._compact()  # also drops a torn last line for good
        self._on_disk = dict(self.storage.texts.get('jobs', {}))
        if torn:
            log.warning('ignored a torn last line in %s (a crash mid-write)',
                        self.storage.journal_path)
        self._writer = gevent.spawn(self._write_loop)
        return self.jobs, dict(meta or {})

    def _read_live_jobs(self):
        jobs = {job.doc_id: {**job, 'checkpoints': {}} for job in self.live_jobs.all()}
        for step in self.checkpoints.all():
            if step['job'] in jobs:
                jobs[step['job']]['checkpoints'][step['key']] = step['value']
                self._keys[step['job']].add(step['key'])
        return jobs

    # Writing -----------------------------------------------------------------

    def save(self, job, public=None):
        job_id = job['id']
        self._check_open()
        self._revive(job_id)
        if job_id not in self.storage.tables.get('jobs', {}):  # new, or archived and back
            for key in job['checkpoints']:
                self._write_checkpoint(job, key)
        if public is not None:  # the submit's 201 body: not encoded twice
            self.storage.encoded[('jobs', job_id)] = public
        self.live_jobs.upsert(Document(
            {key: value for key, value in job.items() if key != 'checkpoints'}, doc_id=job_id))
        public = self.storage.texts['jobs'][job_id]
        if job['status'] in FINISHED:
            self._finished[job_id] = public
        else:
            self._finished.pop(job_id, None)
        self._unsynced[job_id] += 1
        self._saved.append((job_id, public))
        return self._queued()

    def save_checkpoint(self, job, key):
        self._check_open()
        self._write_checkpoint(job, key)
        return self._queued()

    def _write_checkpoint(self, job, key):
        doc_id = checkpoint_id(job['id'], key)
        if key in job['checkpoints']:
            self._keys[job['id']].add(key)
            self.checkpoints.upsert(Document({'job': job['id'], 'key': key,
                                              'value': job['checkpoints'][key]}, doc_id=doc_id))
        else:
            self._keys[job['id']].discard(key)
            self.checkpoints.remove(doc_ids=[doc_id])

    def problem(self):
        # A minute after the last failure, not until the next success: a full
        # disk lets small writes through between refusals (and compaction
        # frees room for a while), and /health must not flicker meanwhile.
        if self._failed is None or time.monotonic() - self._failed[0] > STORE_PROBLEM_S:
            return None
        return f'{self._failed[1]} ({time.monotonic() - self._failed[0]:.0f} s ago)'

    def shown(self, job_id):
        if self._unsynced.get(job_id):
            return self._on_disk.get(job_id, '')
        if job_id in self._finished:  # its text as saved is current: not encoded again
            return self._on_disk.get(job_id)
        return None

    def _revive(self, job_id):
        """An archived job that changes again (a retry, a late publish)
        lives again; until the change is on disk, users see its archived text."""
        entry = self.archive.entries.get(job_id)
        if entry is not None:
            if job_id not in self._on_disk:
                self._on_disk[job_id] = ArchivedJob(entry, self.archive).public_text().decode()
            self.archive.forget(job_id)

    def delete(self, job_id):
        self._check_open()
        self._drop(job_id)
        self._on_disk.pop(job_id, None)
        self._finished.pop(job_id, None)
        self.archive.forget(job_id)
        self._forgotten.add(job_id)
        self.storage.forget(job_id)
        return self._queued()

    def _drop(self, job_id):
        """The job leaves the database (its checkpoints too)."""
        self.live_jobs.remove(doc_ids=[job_id])
        keys = self._keys.pop(job_id, ())
        self.checkpoints.remove(doc_ids=[checkpoint_id(job_id, key) for key in keys])

    def save_meta(self, meta):
        self._check_open()
        self.meta.upsert(Document(meta, doc_id='engine'))
        return self._queued()

    def _check_open(self):
        if self._closing and self._writer is None:
            raise StoreError('the store is closed')

    def _queued(self):
        """The waitable of the batch the lines just written go out with."""
        self._wakeup.set()
        return self._batch

    def _write_loop(self):
        while not (self._closing and not self.storage.lines):
            self._wakeup.wait()
            self._wakeup.clear()
            self._write_batch()
            if self._since_compact >= max(self.compact_every, self.storage.size()):
                self._compact_or_log()

    def _write_batch(self):
        data, batch, saved = self.storage.take(), self._batch, self._saved
        self._batch, self._saved = gevent.event.AsyncResult(), []
        if not data:
            batch.set(None)
            return
        try:
            run_in_thread(self.storage.append, data)
        except OSError as exc:
            log.error('journal write failed: %s', exc)
            self._failed = (time.monotonic(), f'the job store could not write to disk: {exc}')
            self._settle(saved, on_disk=False)
            batch.set_exception(StoreError(f'could not save to disk: {exc}'))
            return
        lines = data.count(b'\n')
        self._since_compact += lines
        self.commits += 1
        self.changes += lines
        self._settle(saved, on_disk=True)
        batch.set(None)

    def _settle(self, saved, on_disk):
        for job_id, public in saved:
            if on_disk and job_id in self.storage.tables.get('jobs', ()):
                self._on_disk[job_id] = public
            self._unsynced[job_id] -= 1
            if self._unsynced[job_id] <= 0:
                del self._unsynced[job_id]

    # Compacting --------------------------------------------------------------

    def _compact_or_log(self):
        try:
            self._compact()
        except OSError as exc:  # the journal still holds everything: try again later
            log.error('could not compact the store in %s: %s', self.dir, exc)
            self._since_compact = self.compact_every // 2

    def _compact(self):
        """Archive the jobs that finished, write the database without them,
        then empty the journal.

        Everything is taken from one moment (no switch happens until the
        first write): changes made while the files are written are in the
        journal's next batch, and a job changed meanwhile stays in memory.
        """
        with self._compacting:
            self._compact_now()

    def _compact_now(self):
        moving = {job_id: (self._archive_line(job_id, public), public)
                  for job_id, public in self._finished.items()}
        forgotten, dead = self._forgotten, self.archive.dead_segments()
        snapshot = self.storage.snapshot(leaving={
            'jobs': moving, 'checkpoints': {checkpoint_id(job_id, key) for job_id in moving
                                            for key in self._keys.get(job_id, ())}})
        self._finished, self._forgotten = {}, set()
        try:
            places = run_in_thread(self.archive.append,
                                   [line for line, _ in moving.values()], forgotten)
            run_in_thread(self.storage.write_snapshot, snapshot)
            self.storage.restart_journal()
            self._since_compact = 0
        except OSError:
            self._finished = {**{job_id: public for job_id, (_, public) in moving.items()},
                              **self._finished}
            self._forgotten |= forgotten
            raise
        self._evict(moving, places)
        self.archive.drop(dead)

    def _archive_line(self, job_id, public):
        steps = self.storage.tables.get('checkpoints', {})
        checkpoints = {key: steps[checkpoint_id(job_id, key)]['value']
                       for key in self._keys.get(job_id, ())}
        return archive_line(self.storage.tables['jobs'][job_id], public, json.dumps(checkpoints))

    def _evict(self, moving, places):
        """Finished jobs leave the database and memory: the table gets their
        ArchivedJob. (Their drops are journalled: the snapshot is without them.)"""
        texts = self.storage.texts.get('jobs', {})
        for (job_id, (line, public)), (segment, offset) in zip(moving.items(), places):
            if texts.get(job_id) is not public or job_id in self._finished:
                continue  # changed while being archived: it stays live
            self._drop(job_id)
            self._on_disk.pop(job_id, None)
            archived = self.archive.add(line, segment, offset)
            if job_id in self.jobs:
                self.jobs[job_id] = archived

    def close(self):
        if self._writer is None:
            return
        self._closing = True
        self._wakeup.set()
        self._writer.join()
        self._compact_or_log()
        self.storage.close()
        self.archive.close()
        self._writer = None


class Outcome:
    """How a call ended (a job's attempt, a thread's work, a greenlet's).
    Returned, not raised, so neither gevent nor its thread pool prints a
    failure as if it were a crash of the engine."""

    def __init__(self, result=None, error=None):
        self.result, self.error, self.succeeded = result, error, error is None


def outcome_of(fn, *args):
    """``fn(*args)`` as an Outcome, for a greenlet or thread whose error its caller raises."""
    try:
        return Outcome(result=fn(*args))
    except Exception as exc:
        return Outcome(error=exc)


def run_in_thread(fn, *args):
    """Run blocking or CPU-heavy ``fn`` on gevent's native thread pool; its
    exception is raised here."""
    outcome = gevent.get_hub().threadpool.apply(outcome_of, (fn, *args))
    if not outcome.succeeded:
        raise outcome.error
    return outcome.result


###############################################################################
# Queue #######################################################################
###############################################################################

class JobQueue:
    """Pending job ids, by priority (urgent first), first in first out within one.

    A heap of ``(rank, sequence, job id)``. Cancelling or re-queueing a job
    does not search the heap: the job's latest sequence number is remembered,
    and entries that do not match it are skipped when they come up.
    """

    def __init__(self):
        self._heap = gevent.queue.PriorityQueue()
        self._sequence = itertools.count()
        self._current = {}

    def push(self, job_id, priority):
        sequence = next(self._sequence)
        self._current[job_id] = sequence
        self._heap.put((PRIORITY_RANK[priority], sequence, job_id))

    def discard(self, job_id):
        self._current.pop(job_id, None)

    def pop(self):
        """Block until a job is due; None once the queue is closed."""
        while True:
            _, sequence, job_id = self._heap.get()
            if job_id is None:
                return None
            if self._current.get(job_id) == sequence:
                del self._current[job_id]
                return job_id

    def close(self, waiters):
        for _ in range(waiters):
            self._heap.put((-1, next(self._sequence), None))


class Clock:
    """The time the engine's retries and waits go by. Tests give the engine
    one whose time they move (tests/test_job_life.py), so a backoff of
    minutes passes in a millisecond."""

    def now_ms(self):
        return now_ms()

    def wait(self, event, seconds):
        """Until ``event`` is set or ``seconds`` have passed."""
        event.wait(seconds)

    def sleep(self, seconds):
        gevent.sleep(seconds)


class Timers:
    """Jobs that wait for a moment (a retry's backoff), in one heap with one
    greenlet, not a greenlet per waiting job. ``due(job_id)`` is called when
    the job's moment comes.

    A heap of ``(due ms, sequence, job id)``; as in JobQueue, a job's latest
    sequence number is remembered, and entries that do not match it are skipped.
    """

    def __init__(self, due, clock):
        self._due, self._clock = due, clock
        self._heap, self._current = [], {}
        self._sequence = itertools.count()
        self._changed = gevent.event.Event()
        self._runner = None

    def add(self, job_id, at_ms):
        sequence = next(self._sequence)
        self._current[job_id] = sequence
        heapq.heappush(self._heap, (at_ms, sequence, job_id))
        if self._runner is None:
            self._runner = gevent.spawn(self._run)
        self._changed.set()

    def discard(self, job_id):
        self._current.pop(job_id, None)

    def __len__(self):
        return len(self._current)

    def close(self):
        if self._runner is not None:
            self._runner.kill(block=False)
            self._runner = None

    def _run(self):
        while True:
            self._changed.clear()
            while self._heap and self._current.get(self._heap[0][2]) != self._heap[0][1]:
                heapq.heappop(self._heap)  # discarded, or added again since
            if not self._heap:
                self._clock.wait(self._changed, None)
                continue
            at_ms, _, job_id = self._heap[0]
            wait = at_ms - self._clock.now_ms()
            if wait > 0:
                self._clock.wait(self._changed, wait / 1000)
                continue
            heapq.heappop(self._heap)
            del self._current[job_id]
            try:
                self._due(job_id)
            except Exception:
                log.exception('the timer of %s failed', job_id)


###############################################################################
# Jobs: the record, its public view and its moves #############################
###############################################################################

# A job's life: every move a job's status can make, from the statuses it
# leaves to the one it enters. Engine._move is the only code that writes a
# job's `status`, and only a move this table holds from where the job is.
# (A job is born pending, in Engine.submit. A completed job's retry publishes
# its failed products again and leaves it completed.)
MOVES = {
    'start': ((PENDING,), RUNNING),
    'complete': ((RUNNING,), COMPLETED),
    'fail': ((RUNNING,), FAILED),
    'back off': ((RUNNING,), PENDING),  # a failed attempt waits for its retry
    'interrupt': ((RUNNING,), PENDING),  # by a stop, or by a crash found at start
    'cancel': ((PENDING, RUNNING), CANCELLED),
    'retry': ((FAILED, CANCELLED), PENDING),  # by hand, with a fresh retry budget
}
FINISH_COUNTERS = {COMPLETED: 'completedJobs', FAILED: 'failedJobs',
                   CANCELLED: 'cancelledJobs'}
STORE_RETRY_MS = 1000  # a job whose move the store refused tries again after this,
STORE_RETRY_MAX_MS = 30_000  # doubling up to this
LOG_LEVELS = {'INFO': logging.INFO, 'SUCCESS': logging.INFO,
              'WARNING': logging.WARNING, 'ERROR': logging.ERROR}


def allows(job, move):
    """Whether ``job``'s status allows ``move`` now."""
    return job['status'] in MOVES[move][0]


def log_entry(message, level='INFO'):
    return {'timestamp': now_ms(), 'message': message, 'type': level}


JOB_ID_ALPHABET = string.digits + string.ascii_lowercase


def new_job_id():
    # One draw from the system's randomness, not one per character (nine
    # getrandom() calls were 5 % of a submit).
    number = secrets.randbelow(36 ** 9)
    tail = []
    for _ in range(9):
        number, digit = divmod(number, 36)
        tail.append(JOB_ID_ALPHABET[digit])
    return f'job_{now_ms()}_{"".join(tail)}'


def new_job(job_type, request, priority, max_retries):
    return {
        'id': new_job_id(), 'type': job_type, 'status': PENDING, 'priority': priority,
        'request': request, 'progress': 0, 'createdAt': now_ms(), 'startedAt': None,
        'completedAt': None, 'result': None, 'error': None, 'retryCount': 0,
        'maxRetries': max_retries, 'interruptions': 0, 'nextRetryAt': None, 'logs': [],
        'checkpoints': {},
    }


def publish_failed(job):
    """Whether a finished job has products whose publish failed after it ended."""
    if isinstance(job, ArchivedJob):
        job = job.load()
    products = (job.get('result') or {}).get('products') or []
    return any(product.get('status') == 'publish_failed' for product in products)


def public_job(job, logs=True):
    """The job as users see it: no checkpoints, and logs only when asked."""
    if isinstance(job, ArchivedJob):
        shown = json.loads(job.public_text())
        if not logs:
            shown.pop('logs', None)
        return shown
    hidden = ('checkpoints',) if logs else ('checkpoints', 'logs')
    return {key: value for key, value in job.items() if key not in hidden}


def public_json(job):
    """``public_job(job)`` as JSON bytes; an archived job's are read as stored."""
    if isinstance(job, ArchivedJob):
        return job.public_text()
    return json.dumps(public_job(job)).encode('utf-8')


JOB_TYPES = ('generate', 'batch', 'custom', 'order')
IMAGES_IN_FLIGHT = 2  # one drawing, the next queued: the GPU never waits for us
BATCH_ITEMS_IN_FLIGHT = 4  # later items draw while earlier ones publish


###############################################################################
# Adapters and plugins ########################################################
###############################################################################

class Plugins:
    """What the modules named in CUSTOM_HANDLERS add to the engine."""

    def __init__(self):
        self.handlers = {}
        self.validators = {}  # handler name -> check(request, product_types)
        self.image_backends = {}
        self.publishers = {}
        self.prompt_writers = {}


def load_plugins(module_names):
    plugins = Plugins()
    for name in module_names:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise ConfigError(f'CUSTOM_HANDLERS: cannot import {name!r}: {exc}') from None
        plugins.handlers.update(getattr(module, 'HANDLERS', {}))
        plugins.validators.update(getattr(module, 'VALIDATORS', {}))
        plugins.image_backends.update(getattr(module, 'IMAGE_BACKENDS', {}))
        plugins.publishers.update(getattr(module, 'PUBLISHERS', {}))
        plugins.prompt_writers.update(getattr(module, 'PROMPT_WRITERS', {}))
    for name, handler in plugins.handlers.items():
        if not callable(handler):
            raise ConfigError(f'CUSTOM_HANDLERS: handler {name!r} is not callable')
        if hasattr(handler, 'validate'):  # how 1.x plugins named their check
            plugins.validators.setdefault(name, handler.validate)
    return plugins


def adapter_registry(plugins):
    from adapters.local import LocalImageBackend, LocalPublisher
    from adapters.llm import LlmWriter
    from adapters.templates import TemplateWriter
    from adapters.printify import PrintifyPublisher
    from adapters.shopify import ShopifyPublisher
    return ({'local': LocalImageBackend, 'comfyui': comfyui.ComfyUIBackend,
             **plugins.image_backends},
            {'local': LocalPublisher, 'printify': PrintifyPublisher,
             'shopify': ShopifyPublisher, **plugins.publishers},
            {'template': TemplateWriter, 'llm': LlmWriter, **plugins.prompt_writers})


def build_adapters(settings, http, plugins):
    """The configured image backend, prompt writer and publishers."""
    images, publishers, writers = adapter_registry(plugins)
    image_name = settings.image_backend or ('comfyui' if settings.comfyui_url else 'local')
    platform_names = settings.enabled_platforms or configured_platforms(settings)
    image_cls = pick(images, image_name, 'IMAGE_BACKEND')
    # Printify first: in a shop connected to Shopify, its publish makes the
    # Shopify product that the Shopify publisher then reports.
    ordered = sorted(dict.fromkeys(platform_names), key=lambda name: name == 'shopify')
    publisher_classes = [pick(publishers, name, 'ENABLED_PLATFORMS') for name in ordered]
    writer_name = settings.prompt_writer or (
        'llm' if settings.llm_base_url or settings.anthropic_api_key else 'template')
    writer = pick(writers, writer_name, 'PROMPT_WRITER')(settings, http)
    return (image_cls(settings, http), writer,
            [cls(settings, http) for cls in publisher_classes])


def configured_platforms(settings):
    """The platforms whose credentials are set; local when there are none."""
    names = []
    if settings.printify_api_token:
        names.append('printify')
    if settings.shopify_store_url and settings.shopify_access_token:
        names.append('shopify')
    return names or ['local']


def pick(registry, name, setting):
    if name not in registry:
        raise ConfigError(f'{setting}: unknown backend {name!r} '
                          f'(available: {", ".join(sorted(registry))})')
    return registry[name]


###############################################################################
# Pipeline: what each job type does ###########################################
###############################################################################

def perform_job(ctx):
    """What the context's job does (one attempt of it), by its type: an Outcome."""
    runner = {'generate': run_generate, 'batch': run_batch, 'custom': run_custom,
              'order': run_order}
    return outcome_of(runner[ctx.job['type']], ctx.job['request'], ctx)


def run_generate(request, ctx):
    """Briefs, then for each design: image, print-ready files, products.

    The image backend (the GPU) and the platforms (their rate limits) are the
    scarce things, so they work side by side: design n is published while
    design n+1 is drawn, and design n+2 already waits in the image backend's
    queue, so a GPU never idles while the engine saves and sends a file.
    """
    # Without a seed each job gets its own, so two jobs on one theme differ;
    # with one, the whole job (briefs and images) can be made again.
    seed = ctx.checkpoint('seed', lambda: request.get('seed', random.randrange(2**31)))
    briefs = write_briefs({**request, 'seed': seed}, ctx)
    per_design = 1 + len(request['productTypes']) * len(ctx.publishers)
    run = Run(ctx, len(briefs) * per_design, designs=[brief.to_dict() for brief in briefs],
              imageBackend=ctx.image_backend.name)
    drawing = gevent.pool.Pool(IMAGES_IN_FLIGHT)
    publishing = gevent.pool.Pool(ctx.settings.publish_concurrency)
    try:
        for type_key in request['productTypes']:
            for publisher in ctx.publishers:
                publishing.spawn(warm_print_area, publisher, ctx.product_types[type_key], ctx)
        for index, brief in enumerate(briefs):  # spawn waits for a free slot
            drawing.spawn(draw_then_publish, run, index, brief, seed, request, publishing)
        drawing.join()
        publishing.join()
    finally:
        drawing.kill()  # a cancelled or timed-out attempt stops all its work
        publishing.kill()
    return run.finish()


def draw_then_publish(run, index, brief, seed, request, publishing):
    try:
        image = generate_image(index, brief, seed, request, run.step_context())
    except AdapterError as exc:
        per_design = 1 + len(request['productTypes']) * len(run.ctx.publishers)
        run.fail(exc, f'design {index + 1}: image failed: {exc}', steps=per_design)
        return
    run.advance()
    publishing.spawn(publish_safely, run, image, index, brief, request)


def warm_print_area(publisher, product_type, ctx):
    """Ask the platform for its print size while the first image draws: the
    catalogue lookups behind it then delay no design's publishing."""
    try:
        publisher.print_area(product_type, ctx)
    except AdapterError as exc:  # each design that needs it reports it
        log.debug('%s: %s print area for %s: %s', ctx.job_id, publisher.name,
                  product_type.key, exc)


def publish_safely(run, image, index, brief, request):
    """publish_design in its own greenlet: a bug fails the design, not silently."""
    try:
        publish_design(run, image, index, brief, request)
    except Exception as exc:
        log.exception('%s: publishing design %d failed', run.ctx.job_id, index + 1)
        run.fail(exc, f'design {index + 1}: {type(exc).__name__}: {exc}')


class Run:
    """What a job has made so far, what failed, and its progress by steps."""

    def __init__(self, ctx, total_steps, **fields):
        self.ctx = ctx
        self.total = max(1, total_steps)
        self.type_keys = []  # the request's order, which products are listed in
        self.done = 0
        self.started = time.monotonic()
        self.failures = []
        self.result = {'success': False, 'generatedImages': [], 'products': [],
                       'errors': [], **fields}

    def advance(self, steps=1):
        self.done += steps
        self.ctx.progress(100 * self.done / self.total)

    def step_context(self):
        """A context whose progress moves within the next step's share."""
        return self.ctx.scoped('', (100 * self.done / self.total,
                                    100 * (self.done + 1) / self.total))

    def fail(self, exc, message, steps=1):
        self.failures.append(as_job_failure(exc))
        self.result['errors'].append(message)
        self.ctx.log(message, 'WARNING')
        self.advance(steps)

    def product_rank(self):
        """Sort key of a product: its design, then its type as the request
        listed them, then its platform (types publish side by side)."""
        designs = {entry['id']: entry['index'] for entry in self.result['generatedImages']}
        platforms = [publisher.name for publisher in self.ctx.publishers]
        return lambda product: (designs.get(product['imageId'], 0),
                                rank(self.type_keys, product.get('type')),
                                rank(platforms, product.get('platform')))

    def finish(self):
        """The result, or a JobFailure that carries it when anything failed."""
        self.result['generatedImages'].sort(key=lambda entry: entry['index'])
        self.result['products'].sort(key=self.product_rank())
        self.result['success'] = not self.failures
        self.result['totalTime'] = int((time.monotonic() - self.started) * 1000)
        if self.failures:
            raise JobFailure('; '.join(self.result['errors']), result=self.result,
                             retryable=any(f.retryable for f in self.failures))
        return self.result


def write_briefs(request, ctx):
    def write():
        count = request.get('count', 1)
        briefs = ctx.prompt_writer.write(request, count, ctx)
        writers = ' and '.join(sorted({b.writer or ctx.prompt_writer.name for b in briefs}))
        ctx.log(f'Wrote {len(briefs)} design brief(s) with the {writers} writer')
        return [brief.to_dict() for brief in briefs]
    return [DesignBrief.from_dict(data) for data in ctx.checkpoint('briefs', write)]


def generate_image(index, brief, seed, request, ctx):
    """Draw design ``index`` (checkpointed); refuse one too small to print."""
    spec = ImageSpec(prompt=brief.image_prompt, seed=seed + index, caption=brief.caption,
                     negative_prompt=request.get('negativePrompt') or brief.negative_prompt,
                     filename_prefix=f'{ctx.prefix.replace(":", "-")}design{index}')

    def generate():
        # At most IMAGES_IN_FLIGHT per job, batch items included; the lane is
        # free again before the checkpoint is saved, so the next image is sent
        # to the GPU while this one is written down.
        with ctx.image_lane:
            ctx.log(f'Generating design {index + 1} with {ctx.image_backend.name}: '
                    f'{brief.image_prompt[:80]}')
            return ctx.image_backend.generate(spec, ctx)[0].to_dict()

    image = ctx.checkpoint(f'image:{index}', generate)
    check_source_size(image, ctx.settings.min_source_px)
    return image


def check_source_size(image, minimum):
    if min(image['width'], image['height']) < minimum:
        raise AdapterError(f'the design is {image["width"]}x{image["height"]} px; printing '
                           f'needs at least {minimum} px on the short side (MIN_SOURCE_PX)',
                           retryable=False)


def publish_design(run, image, index, brief, request):
    """Print-ready files and one product per product type on every platform.

    The product types publish side by side, so the last design of a job
    waits for one chain of platform calls, not one per type; on one type
    the platforms go in order (Shopify may take the product Printify made).
    """
    entry = image_entry(image, index, brief, run.ctx)
    run.result['generatedImages'].append(entry)
    if index < len(run.result.get('designs', [])):  # one report, shown on both
        run.result['designs'][index]['print'] = entry['print']
    run.type_keys = list(request['productTypes'])
    design = (image, index, entry, gevent.lock.Semaphore())  # the lock: see publish_type
    types = [gevent.spawn(outcome_of, publish_type, run, design, brief, request, type_key)
             for type_key in request['productTypes']]
    try:
        gevent.joinall(types)
    finally:
        gevent.killall(types)  # a cancelled attempt stops every type
    for done in types:  # an unexpected error ends the design, as it did one type at a time
        if not done.value.succeeded:
            raise done.value.error


def publish_type(run, design, brief, request, type_key):
    """One product of the design per platform, as ``type_key``; then each
    platform may finish what needed the others' products (``link``)."""
    image, index, entry, making = design
    ctx = run.ctx
    made, failures = [], {}
    for publisher in ctx.publishers:
        try:
            product = publish_on(publisher, run, design, brief, request, type_key)
        except AdapterError as exc:
            failures[publisher.name] = exc
            run.fail(exc, f'design {index + 1}: {publisher.name} {type_key}: {exc}')
            continue
        if product is not None:
            made.append({**product, 'imageId': entry['id']})
        run.advance()
    for publisher in ctx.publishers:
        try:
            publisher.link(made, failures, ctx)
        except AdapterError as exc:
            run.fail(exc, f'design {index + 1}: {publisher.name} {type_key}: {exc}', steps=0)
    run.result['products'].extend(made)


def publish_on(publisher, run, design, brief, request, type_key):
    """The product of one design and type on one platform (checkpointed)."""
    image, index, entry, making = design
    ctx = run.ctx
    placement = request.get('placement') or ctx.product_types[type_key].placement
    with making:  # the design's art is cut out once, for every type
        product_type = garment_colours(image, index, ctx.product_types[type_key], ctx, entry)
    size = publisher.print_area(product_type, ctx)
    with making:  # types that share a print size share its file: made once
        artwork = print_file(image, index, size, ctx, entry, placement)
    product = ctx.checkpoint(
        f'product:{publisher.name}:{index}:{type_key}',
        lambda: publisher.publish(artwork, product_type, copy_for(brief, type_key),
                                  run.step_context(),
                                  auto_publish=request.get('autoPublish', True)))
    if product is not None:
        ctx.log(f'Created {type_key} on {publisher.name}: {product["productId"]} '
                f'({product.get("status", "made")})', 'SUCCESS')
    return product


def rank(ordered, value):
    """Where ``value`` stands in ``ordered``; after them all when absent."""
    return ordered.index(value) if value in ordered else len(ordered)


def image_entry(image, index, brief, ctx):
    """The result's record of one design: its source image and print files."""
    return {'id': f'img_{ctx.job_id.split("_")[-1]}_{ctx.prefix.replace(":", "")}{index}',
            'index': index, 'url': ctx.file_url(image['path']), 'path': image['path'],
            'prompt': brief.image_prompt, 'title': brief.title,
            'width': image['width'], 'height': image['height'],
            'backend': image.get('backend', ctx.image_backend.name), 'seed': image.get('seed'),
            'source': {'width': image['width'], 'height': image['height']},
            'printFiles': [], 'print': {
                'sourcePx': [image['width'], image['height']], 'printPx': None,
                'effectiveDpi': None, 'background': None, 'placement': None,
                'coverage': None, 'upscaledBy': None, 'disabledColours': {},
                'warnings': []}}


def print_file(image, index, size, ctx, entry, placement):
    """The design made print-ready at ``size`` by ``placement`` (checkpointed,
    once per size and placement); its decisions go to the design's ``print``."""
    width, height = size
    art = design_art(image, index, ctx)
    if needs_upscale(art, size, placement, ctx):
        art = upscaled_art(art, index, ctx)
    ready = ctx.checkpoint(f'printready:{index}:{width}x{height}:{placement}',
                           lambda: render_print_file(art, index, size, placement, ctx))
    url = ctx.file_url(ready['path'])
    if not entry['printFiles']:
        # The spec's url/width/height name the print-ready design.
        entry.update(url=url, path=ready['path'], width=width, height=height)
    if all(f['path'] != ready['path'] for f in entry['printFiles']):
        entry['printFiles'].append({'path': ready['path'], 'url': url, 'width': width,
                                    'height': height, 'placement': ready['placement'],
                                    'effectiveDpi': ready['effectiveDpi']})
    note_print(entry, art, ready)
    return Artwork(key=f'{ctx.prefix}{index}', path=ready['path'], url=url,
                   width=width, height=height)


def design_art(image, index, ctx):
    """The design's cut-out, trimmed art (checkpointed, once per design)."""
    def cut():
        art = ctx.run_in_thread(printready.prepare_art, ctx.data_dir, image,
                                ctx.settings.background)
        background = art['background']
        if background['decision'] == 'removed':
            ctx.log(f'design {index + 1}: removed its {background["color"]} background '
                    f'({background["removed"]:.0%} of the image)')
        elif background['decision'] == 'kept':
            ctx.log(f'design {index + 1}: kept its background: {background["reason"]}')
        return art
    return ctx.remember(f'art:{index}', cut)


def needs_upscale(art, size, placement, ctx):
    """Whether an upscale model should enlarge ``art`` before it is placed."""
    if art['laidOut'] or not ctx.settings.comfyui_upscale_model:
        return False
    box = printready.placed_box((art['width'], art['height']), size, placement)
    return printready.effective_dpi(art['width'], box[2]) < ctx.settings.print_min_dpi


def upscaled_art(art, index, ctx):
    """``art`` enlarged by COMFYUI_UPSCALE_MODEL (checkpointed, once per design)."""
    model, backend = ctx.settings.comfyui_upscale_model, ctx.image_backend
    if not hasattr(backend, 'upscale'):
        return art  # the print step's WARNING says it was only resized

    def enlarge():
        colours = ctx.run_in_thread(printready.art_colours, ctx.data_dir, art)
        prefix = f'{ctx.prefix.replace(":", "-")}design{index}_upscaled'
        with ctx.image_lane:  # the GPU, shared with the job's drawing
            enlarged = backend.upscale(colours, model, prefix, ctx).to_dict()
        bigger = ctx.run_in_thread(printready.with_art_alpha, ctx.data_dir, art, enlarged, model)
        ctx.log(f'design {index + 1}: upscaled its art {art["width"]}x{art["height"]} to '
                f'{bigger["width"]}x{bigger["height"]} with {model}')
        return bigger
    return ctx.checkpoint(f'art:{index}:upscaled', enlarge)


def render_print_file(art, index, size, placement, ctx):
    """Place ``art`` in a print area of ``size``, first checking it prints
    sharp enough there (PRINT_MIN_DPI)."""
    report = ctx.run_in_thread(printready.render_print, ctx.data_dir, art, size, placement)
    minimum, dpi = ctx.settings.print_min_dpi, report['effectiveDpi']
    if dpi < minimum:
        where = f'{report["placement"]} on {size[0]}x{size[1]}'
        if ctx.settings.print_min_dpi_strict:
            raise AdapterError(f'design {index + 1} would print at {dpi} DPI ({where}), under '
                               f'PRINT_MIN_DPI {minimum} (PRINT_MIN_DPI_STRICT)',
                               retryable=False)
        after = f'after {art["upscaledBy"]}, ' if art.get('upscaledBy') else ''
        warning = (f'design {index + 1} prints at {dpi} DPI ({where}), under PRINT_MIN_DPI '
                   f'{minimum}: {after}upscaled with Lanczos, which adds no detail')
        ctx.log(warning, 'WARNING')
        report['warning'] = warning
    return report


def note_print(entry, art, ready):
    """The design's print report: its art, and the least sharp of its files."""
    report = entry['print']
    report.update(sourcePx=art['source'], background=art['background'],
                  upscaledBy=art.get('upscaledBy'))
    if report['effectiveDpi'] is None or ready['effectiveDpi'] < report['effectiveDpi']:
        report.update(printPx=[ready['width'], ready['height']], placement=ready['placement'],
                      effectiveDpi=ready['effectiveDpi'], coverage=ready['coverage'])
    if ready.get('warning') and ready['warning'] not in report['warnings']:
        report['warnings'].append(ready['warning'])


def garment_colours(image, index, product_type, ctx, entry):
    """``product_type`` with only the colours the design shows on; a
    design that shows on none of them fails."""
    art = design_art(image, index, ctx)
    found = ctx.remember(f'colours:{index}:{product_type.key}', lambda: ctx.run_in_thread(
        printready.check_colours, ctx.data_dir, art, product_type.colors,
        product_type.extra.get('colorHex'), ctx.settings.colour_min_visibility))
    shown = ', '.join(f'{name} {share:.0%}' for name, share in found['visibility'].items())
    if not found['kept']:
        raise AdapterError(f'design {index + 1} does not show on any {product_type.key} colour '
                           f'({shown}; COLOUR_MIN_VISIBILITY '
                           f'{ctx.settings.colour_min_visibility:.0%})', retryable=False)
    if found['disabled']:
        entry['print']['disabledColours'][product_type.key] = found['disabled']
        ctx.log(f'design {index + 1}: {product_type.key} in {", ".join(found["disabled"])} '
                f'disabled: the design hardly shows on it ({shown})')
    return dataclasses.replace(product_type, colors=found['kept'])


def run_batch(request, ctx):
    """Each item as a generate job, started in order; a failed item does not
    stop the rest. Items share the job's image lane, so their images are
    drawn one at a time and in order, while earlier items publish."""
    items = request['items']
    outcomes = [None] * len(items)
    pool = gevent.pool.Pool(BATCH_ITEMS_IN_FLIGHT)
    try:
        for index, item in enumerate(items):
            pool.spawn(run_batch_item, index, item, len(items), ctx, outcomes)
        pool.join()
    finally:
        pool.kill()
    failures = [(index, o) for index, o in enumerate(outcomes) if isinstance(o, JobFailure)]
    result = {'results': [o.result if isinstance(o, JobFailure) else o for o in outcomes],
              'errors': [{'index': index, 'error': str(f)} for index, f in failures],
              'total': len(items)}
    if failures:
        raise JobFailure(f'{len(failures)} of {len(items)} items failed', result=result,
                         retryable=any(f.retryable for _, f in failures))
    return result


def run_batch_item(index, item, total, ctx, outcomes):
    share = (100 * index / total, 100 * (index + 1) / total)
    item_ctx = ctx.scoped(f'item:{index}:', share)
    try:
        outcomes[index] = item_ctx.checkpoint('done', lambda: run_generate(item, item_ctx))
    except Exception as exc:  # the item's failure is its result, not the batch's end
        outcomes[index] = as_job_failure(exc)
    ctx.progress(math.floor(share[1]))


def run_order(request, ctx):
    """A Shopify sale of engine products, forwarded to Printify (adapters/orders.py)."""
    desk = ctx.engine.order_desk()
    if desk is None:
        raise AdapterError('orders are not forwarded: they need Printify (an API shop) and '
                           'Shopify, not a dry run', retryable=False)
    return desk.forward(request, ctx, ctx.engine.listings)


def products_of(result):
    """Every product of a job's result (a batch holds them per item)."""
    result = result or {}
    items = [result] + [r for r in result.get('results') or [] if isinstance(r, dict)]
    return [product for item in items for product in item.get('products') or []]


def run_custom(request, ctx):
    handler = ctx.engine.handlers[request['handler']]
    return handler(request, ctx)


# The built-in custom handler ---------------------------------------------------

INBOX_URL_SCHEMES = ('http://', 'https://')
MAX_DOWNLOAD_BYTES = 50 * 2**20


def publish_image(request, ctx):
    """Publish a design the user already has as the requested product types."""
    image = ctx.checkpoint('source', lambda: fetch_source_image(request['image'], ctx))
    check_source_size(image, ctx.settings.min_source_px)
    brief = brief_for_image(request, ctx)
    run = Run(ctx, len(request['productTypes']) * len(ctx.publishers),
              designs=[brief.to_dict()])
    publish_design(run, image, 0, brief, request)
    return run.finish()


def validate_publish_image(request, catalog):
    """What the schema cannot say: the image is a URL or stays in the inbox."""
    if not request['image'].startswith(INBOX_URL_SCHEMES):
        inbox_path(request['image'])
    request.setdefault('autoPublish', True)
    return request


def inbox_path(name):
    """``name`` as a path under DATA_DIR/inbox, refusing one that leaves it."""
    relative = PurePosixPath(name.removeprefix('inbox/'))
    if relative.is_absolute() or '..' in relative.parts or '\\' in name \
            or not relative.parts:
        raise ValidationError('request.image must be an http(s) URL or a file name '
                              'under DATA_DIR/inbox/')
    return Path('inbox', relative)


def fetch_source_image(image, ctx):
    """The user's image copied into the job's folder; its path under DATA_DIR."""
    ctx.job_dir.mkdir(parents=True, exist_ok=True)
    target = ctx.job_dir / 'source.png'
    if image.startswith(INBOX_URL_SCHEMES):
        data = download(image, ctx)
    else:
        path = (ctx.data_dir / inbox_path(image)).resolve()
        # resolve() follows symlinks: a link in the inbox may not point out of it.
        if not path.is_relative_to(ctx.data_dir / 'inbox') or not path.is_file():
            raise AdapterError(f'{image} is not in DATA_DIR/inbox', retryable=False)
        data = path.read_bytes()
    width, height = ctx.run_in_thread(save_as_png, data, target)
    ctx.log(f'Fetched the design from {image[:120]} ({width}x{height})')
    return {'path': str(target.relative_to(ctx.data_dir)), 'width': width, 'height': height,
            'backend': 'upload'}


def download(url, ctx):
    try:
        with ctx.http.get(url, stream=True, timeout=(5, 30)) as response:
            if response.status_code >= 400:
                raise AdapterError(f'GET {url} answered {response.status_code}',
                                   retryable=response.status_code >= 500 or
                                   response.status_code == 429)
            data = response.raw.read(MAX_DOWNLOAD_BYTES + 1, decode_content=True)
    except requests.RequestException as exc:
        raise AdapterError(f'could not download {url}: {exc}') from exc
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise AdapterError(f'{url} is larger than {MAX_DOWNLOAD_BYTES} bytes', retryable=False)
    return data


def save_as_png(data, target):
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            image.convert('RGBA').save(target, 'PNG')
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise AdapterError(f'not a usable image: {exc}', retryable=False) from None


def brief_for_image(request, ctx):
    written = ctx.checkpoint('briefs', lambda: [b.to_dict() for b in ctx.prompt_writer.write(
        {'prompt': request.get('prompt') or request.get('title') or 'Original design',
         'productTypes': request['productTypes']}, 1, ctx)])
    brief = DesignBrief.from_dict(written[0])
    brief.title = request.get('title') or brief.title
    brief.description = request.get('description') or brief.description
    brief.tags = request.get('tags') or brief.tags
    return brief


def comfyui_workflow(request, ctx):
    """Run the request's own ComfyUI workflow and collect its images; publish
    them like a generate job when productTypes are given."""
    backend = ctx.image_backend
    if not isinstance(backend, comfyui.ComfyUIBackend):
        raise AdapterError('comfyui_workflow needs the ComfyUI image backend '
                           '(set COMFYUI_URL)', retryable=False)
    values = ctx.checkpoint('inputs', lambda: workflow_inputs(request, ctx))
    images = ctx.checkpoint('images', lambda: run_user_workflow(request, values, backend, ctx))
    types = request.get('productTypes') or []
    brief = brief_for_image({**request, 'productTypes': types or list(ctx.product_types)[:1],
                             'prompt': request.get('prompt') or values['prompt'] or None}, ctx)
    run = Run(ctx, len(images) * len(types) * len(ctx.publishers), imageBackend=backend.name,
              designs=[brief.to_dict()])
    for index, image in enumerate(images):
        if not types:
            run.result['generatedImages'].append(image_entry(image, index, brief, ctx))
            continue
        try:
            check_source_size(image, ctx.settings.min_source_px)
        except AdapterError as exc:
            run.fail(exc, f'image {index + 1}: {exc}', steps=len(types) * len(ctx.publishers))
            continue
        publish_design(run, image, index, brief, {**request, 'productTypes': types})
    return run.finish()


def workflow_inputs(request, ctx):
    settings = ctx.settings
    values = {'prompt': request.get('prompt', ''), 'negative_prompt': '',
              'seed': random.randrange(2**31), 'width': settings.comfyui_width,
              'height': settings.comfyui_height, 'steps': settings.comfyui_steps,
              'cfg': settings.comfyui_cfg, 'checkpoint': settings.comfyui_checkpoint,
              'filename_prefix': f'pod/{ctx.job_id}/workflow'}
    return {**values, **request.get('inputs', {})}


def run_user_workflow(request, values, backend, ctx):
    workflow = comfyui.fill_workflow(request['workflow'], values)
    outputs = backend.run_workflow(workflow, 'comfyui:workflow', ctx)
    return [backend.save(output, ctx.job_dir / f'workflow_{index}.png', values['prompt'],
                         values['seed'], ctx).to_dict()
            for index, output in enumerate(outputs)]


def validate_comfyui_workflow(request, catalog):
    """What the schema cannot say: the workflow has an output node."""
    try:
        comfyui.check_workflow(request['workflow'], 'request.workflow', need_prompt=False)
    except ConfigError as exc:
        raise ValidationError(str(exc)) from None
    request.setdefault('autoPublish', True)
    return request


BUILTIN_HANDLERS = {'publish_image': publish_image, 'comfyui_workflow': comfyui_workflow}
BUILTIN_VALIDATORS = {'publish_image': validate_publish_image,
                      'comfyui_workflow': validate_comfyui_workflow}


###############################################################################
# Prometheus metrics ##########################################################
###############################################################################

class EngineCollector:
    """Reads the engine's state at scrape time: nothing is counted twice and
    nothing costs anything between scrapes."""

    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        engine = self.engine
        yield self.jobs_by_status(engine)
        yield self.finished(engine)
        yield CounterMetricFamily('pod_job_retries', 'Automatic and manual job retries',
                                  value=engine.stats['retries'])
        yield GaugeMetricFamily('pod_queue_depth', 'Jobs waiting to run (queued or in '
                                'retry delay)', value=engine.counts[PENDING])
        yield self.websocket_clients(engine)
        yield CounterMetricFamily('pod_store_commits', 'Journal fsyncs; changes that '
                                  'arrive together share one', value=engine.store.commits)
        yield CounterMetricFamily('pod_store_changes', 'Job and counter changes made '
                                  'durable', value=engine.store.changes)
        yield from self.upstream(engine)

    @staticmethod
    def jobs_by_status(engine):
        family = GaugeMetricFamily('pod_jobs', 'Stored jobs by status', labels=['status'])
        for status in STATUSES:
            family.add_metric([status], engine.counts[status])
        return family

    @staticmethod
    def finished(engine):
        family = CounterMetricFamily('pod_jobs_finished', 'Jobs finished since the store '
                                     'began, by outcome', labels=['outcome'])
        for outcome in ('completed', 'failed', 'cancelled'):
            family.add_metric([outcome], engine.meta[f'{outcome}Jobs'])
        return family

    @staticmethod
    def websocket_clients(engine):
        family = GaugeMetricFamily('pod_websocket_clients', 'Connected event clients',
                                   labels=['transport'])
        for transport, count in engine.count_clients().items():
            family.add_metric([transport], count)
        return family

    @staticmethod
    def upstream(engine):
        requests_ = CounterMetricFamily('pod_upstream_requests', 'Requests to upstream '
                                        'services by status (error: no answer)',
                                        labels=['service', 'status'])
        waits = CounterMetricFamily('pod_rate_limit_waits', 'Requests held back to stay '
                                    'inside a rate limit', labels=['service', 'limit'])
        waited = CounterMetricFamily('pod_rate_limit_wait_seconds', 'Time spent held back '
                                     'by rate limits', labels=['service', 'limit'])
        for adapter in {engine.image_backend, engine.prompt_writer, *engine.publishers}:
            for status, count in sorted(adapter.upstream_stats().items()):
                requests_.add_metric([adapter.name, status], count)
            for limit, (count, seconds) in adapter.rate_limit_waits().items():
                waits.add_metric([adapter.name, limit], count)
                waited.add_metric([adapter.name, limit], seconds)
        return requests_, waits, waited


def create_registry(engine):
    """A registry of this engine's own (never the global one), and the job
    duration histogram in it."""
    registry = CollectorRegistry()
    registry.register(EngineCollector(engine))
    job_seconds = Histogram(
        'pod_job_duration_seconds', 'Time of a job\'s last attempt, by type and outcome',
        ['type', 'outcome'], registry=registry,
        buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800))
    return registry, job_seconds


###############################################################################
# The engine: workers and the life of a job ###################################
###############################################################################

class JobContext:
    """The handle a running job's code gets: progress, logs, checkpoints."""

    def __init__(self, engine, job, prefix='', span=(0, 100), image_lane=None, memo=None):
        self.engine = engine
        self.job = job
        self.memo = {} if memo is None else memo  # this attempt's derived values
        self.image_lane = image_lane or gevent.lock.Semaphore(IMAGES_IN_FLIGHT)
        self.job_id = job['id']
        self.settings = engine.settings
        self.data_dir = engine.settings.data_path
        self.job_dir = self.data_dir / 'designs' / job['id']
        self.prefix = prefix
        self.span = span
        self.http = engine.http
        self.image_backend = engine.image_backend
        self.prompt_writer = engine.prompt_writer
        self.publishers = engine.publishers
        self.product_types = engine.product_types

    def log(self, message, level='INFO'):
        self.engine.add_log(self.job, message, level)

    def progress(self, percent):
        low, high = self.span
        self.engine.set_progress(self.job, low + (high - low) * percent / 100)

    @property
    def cancelled(self):
        return self.job['status'] != RUNNING

    def checkpoint(self, key, make):
        """The stored value of step ``key``, or ``make()`` stored durably.

        Values must be JSON-serialisable. A retry or restart finds them and
        skips the step.
        """
        key = self.prefix + key
        done = self.job['checkpoints']
        if key not in done:
            # Kept in memory even if the save fails: the step has run (made
            # something upstream), and running it again could make it twice.
            done[key] = make()
            self.engine.save_checkpoint(self.job, key).get()
        return done[key]

    def remember(self, key, make):
        """The value of step ``key`` in this attempt, or ``make()`` kept in
        memory: for steps that redo the same from files on disk after a
        restart, so they need no durable save."""
        key = self.prefix + key
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]

    def lookup(self, key):
        """The stored value of step ``key``, or None if it has not run."""
        return self.job['checkpoints'].get(self.prefix + key)

    def forget(self, key):
        """Drop a checkpoint, so the step runs again (e.g. on another server)."""
        if self.job['checkpoints'].pop(self.prefix + key, None) is not None:
            self.engine.save_checkpoint(self.job, self.prefix + key).get()

    def scoped(self, prefix, span):
        """A context for a part of the job (a batch item): own keys, own share."""
        low, high = self.span
        width = high - low
        return JobContext(self.engine, self.job, self.prefix + prefix,
                          (low + width * span[0] / 100, low + width * span[1] / 100),
                          self.image_lane, self.memo)

    def file_url(self, path):
        return f'{self.engine.public_url}/files/{quote(str(path))}'

    def run_in_thread(self, fn, *args):
        return run_in_thread(fn, *args)


RECENT_OUTCOMES = 200  # job outcomes /health keeps to judge a failure rate by


class Engine:
    """The jobs, the queue and the workers; everything the API acts on."""

    def __init__(self, settings, store=None, adapters=None, clock=None):
        self.settings = settings
        self.clock = clock or Clock()
        self.events = EventBus()
        self.store = store or (JournalStore(settings.data_path)
                               if settings.enable_persistence else MemoryStore())
        self.jobs = JobTable(archive=None)  # the store's, once open
        self.counts = collections.Counter()
        self.meta = {'totalJobs': 0, 'completedJobs': 0, 'failedJobs': 0,
                     'cancelledJobs': 0, 'jobTimeTotal': 0, 'jobTimeCount': 0,
                     'lastActivity': None, 'recent': []}
        self.queue = JobQueue()
        self.started_at = now_ms()
        self.public_url = ''
        self.http = requests.Session()
        self.http.headers['User-Agent'] = f'pod-engine/{__version__}'
        self.plugins = load_plugins(settings.custom_handlers)
        self.product_types = load_product_types(settings.product_types_file)
        self.blocklist = Blocklist.load(settings.blocked_terms_file)
        self.handlers = {**BUILTIN_HANDLERS, **self.plugins.handlers}
        self.validators = {**BUILTIN_VALIDATORS, **self.plugins.validators}
        self.schemas = RequestSchemas(self.product_types, self.handlers)
        self.stats = collections.Counter()
        self._client_counters = {}  # transport -> how many clients it has now
        self.registry, self.job_seconds = create_registry(self)
        build = adapters or build_adapters
        self.image_backend, self.prompt_writer, self.publishers = build(
            settings, self.http, self.plugins)
        persisted = settings.enable_persistence
        self.listings = Listings(settings.data_path / 'listings.json' if persisted else None)
        self.order_book = OrderBook(settings.data_path / 'orders.json' if persisted else None)
        self.order_follower = OrderFollower(
            self.order_desk, self.update_order, settings.order_notify_customer,
            settings.data_path / 'order-follow.json' if persisted else None)
        self.follower = PublishFollower(
            self.publishers, self.update_product, settings.printify_sync_wait_ms,
            settings.data_path / 'publishing.json' if settings.enable_persistence else None)
        self.services = {}
        self.image_up = False
        self.stopping = False
        self._attempts = {}
        self._changing = KeyedLocks().hold  # a job's moves one at a time
        self.timers = Timers(self._due, self.clock)
        self.job_backoff = RetryPolicy(first_wait=settings.retry_delay_ms / 1000,
                                       longest_backoff=settings.retry_max_delay_ms / 1000)
        self.store_backoff = RetryPolicy(first_wait=STORE_RETRY_MS / 1000,
                                         longest_backoff=STORE_RETRY_MAX_MS / 1000,
                                         sleep=self.clock.sleep)
        self._workers = []
        self._lock_file = None
        self._not_ours = set()  # Shopify orders that sell no engine product

    # Start and stop ----------------------------------------------------------

    def open(self):
        """Take DATA_DIR, load the stored jobs and put interrupted ones back."""
        if self.settings.enable_persistence:
            self._lock_data_dir()
        self.jobs, meta = self.store.open()
        self.meta.update(meta)
        self.counts.update(job['status'] for job in self.jobs.values())
        self._recover()

    def _lock_data_dir(self):
        path = self.settings.data_path
        path.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(path / '.lock', 'w')
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f'DATA_DIR: {path} is in use by another POD Engine') from None

    def _recover(self):
        """Jobs that were running when the engine died start again from their
        checkpoints. A crash is not the job's failure, so it spends no retry;
        it is counted apart (as BullMQ counts stalls), and a job interrupted
        more than MAX_INTERRUPTIONS times fails: one that itself crashes or
        freezes the engine must not bring it down for ever."""
        for job in self.jobs.live():
            if job['type'] == 'order':  # its orders.json line may not have been written
                self.order_book.restore(job['request']['shopifyOrderId'], job['id'])
            if job['status'] == RUNNING:
                self._recover_interrupted(job)
            if job['status'] == PENDING:
                self._enqueue(job)

    def _recover_interrupted(self, job):
        count = job.get('interruptions', 0) + 1
        allowed = self.settings.max_interruptions
        if count > allowed:
            self._finish(job, 'fail', 'Job failed: interrupted by a crash or restart '
                         f'{count} times; not trying again', 'ERROR', interruptions=count,
                         error='Interrupted by a crash or restart too many times')
        else:
            self._move(job, 'interrupt', 'Interrupted by a crash or restart; resuming from '
                       f'its checkpoints (interruption {count}/{allowed})', 'WARNING',
                       interruptions=count)

    def start(self):
        self.probe_services()
        for warning in self.fulfilment_warnings():
            log.warning('%s', warning)
        self._workers = [gevent.spawn(self._work)
                         for _ in range(self.settings.max_concurrent_jobs)]

    def stop(self, timeout):
        """Stop taking jobs, let running ones finish for ``timeout`` seconds,
        then interrupt the rest; they resume from checkpoints next start."""
        self.stopping = True
        self.queue.close(len(self._workers))
        self.timers.close()
        gevent.joinall(self._workers, timeout=timeout)
        for job_id, attempt in list(self._attempts.items()):
            # As in cancel: the job is pending again before its attempt is
            # killed, so its worker leaves it be, to resume next start.
            try:
                self._move(self.jobs[job_id], 'interrupt', 'Interrupted by shutdown; '
                           'will resume from its checkpoints', 'WARNING')
            except Unavailable as exc:  # running on disk: the next start resumes it anyway
                log.warning('%s: its interruption was not saved: %s', job_id, exc)
            attempt.kill(block=False)
            attempt.join(timeout=5)
        gevent.killall(self._workers, timeout=5)
        self.store.save_meta(self.meta)
        self.store.close()
        for adapter in {self.image_backend, self.prompt_writer, *self.publishers}:
            adapter.close()

    # Submit, cancel, retry, cleanup -------------------------------------------

    def submit(self, job_type, request, priority='normal', max_retries=None):
        """Accept a validated job; returns ``(job, public_json(job))`` once it is on disk."""
        if self.stopping:
            raise Unavailable('The engine is shutting down; try again shortly')
        if max_retries is None:
            max_retries = self.settings.max_job_retries
        job = new_job(job_type, request, priority, max_retries)
        self.jobs[job['id']] = job
        self.counts[PENDING] += 1
        self.meta['totalJobs'] += 1
        # The engine's log hears of it at DEBUG, like each HTTP request: at a
        # few thousand submits a second the line was a tenth of a submit's time
        # (and past journald's rate limit). The job's own log keeps it.
        entry = self._write_log(job, f'Job {job["id"]} submitted', engine_level=logging.DEBUG)
        shown = public_json(job)  # encoded once: saved, and the 201's body
        try:
            self._save_durably(job, meta=True, public=shown.decode())
        except Unavailable:
            self._forget_unsaved(job)
            raise
        self._announce(job, entry)
        self._enqueue(job)
        return job, shown

    def _forget_unsaved(self, job):
        """A submit that could not be saved is refused (503): it must not run."""
        self.jobs.pop(job['id'], None)
        self.store.delete(job['id'])
        self.counts[PENDING] -= 1
        self.meta['totalJobs'] -= 1

    def _save_durably(self, job, meta=False, public=None):
        waits = [self.store.save(job, public)]
        if meta:
            waits.append(self.store.save_meta(self.meta))
        try:
            for waitable in waits:
                waitable.get()
        except StoreError as exc:
            raise Unavailable(str(exc)) from None

    def get(self, job_id):
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound('Job not found')
        return job

    def find(self, status=None, newest=False, offset=0, limit=None, job_type=None):
        """The jobs (with ``status``, of ``job_type``): a JobList (see JobTable.find)."""
        return self.jobs.find(status, newest, offset, limit, job_type)

    def cancel(self, job_id):
        job = self.get(job_id)
        if not allows(job, 'cancel') or not self._finish(job, 'cancel', 'Job cancelled',
                                                         'WARNING'):
            raise Conflict('Cannot cancel job')
        self.queue.discard(job_id)
        self.timers.discard(job_id)
        attempt = self._attempts.get(job_id)
        if attempt is not None:
            # Stop the work itself, not just the bookkeeping. It is killed once
            # the job is cancelled, so its worker sees that, not a failed attempt.
            attempt.kill(block=False)
            attempt.join(timeout=10)  # its adapters clean up in `finally`

    def retry(self, job_id):
        job = self.get(job_id)
        if job['status'] == COMPLETED and publish_failed(job):
            return self._republish(job)
        if not allows(job, 'retry'):
            raise Conflict('Cannot retry job')
        if isinstance(job, ArchivedJob):
            job = self.jobs[job_id] = job.load()
        if publish_failed(job):  # its checkpoints hold those publishes as sent
            self._republish(job)
        counter = {FINISH_COUNTERS[job['status']]: -1}
        if not self._move(job, 'retry', 'Manual retry: queued with a fresh retry budget',
                          meta=counter, retryCount=0, interruptions=0, error=None,
                          result=None, completedAt=None, progress=0, nextRetryAt=None):
            raise Conflict('Cannot retry job')
        self.stats['retries'] += 1
        self._enqueue(job)

    def _republish(self, job):
        """A completed job's retry: publish its publish_failed products again."""
        if isinstance(job, ArchivedJob):
            job = self.jobs[job['id']] = job.load()
        try:
            sent = self.follower.republish(job['id'], job['result']['products'])
        except AdapterError as exc:
            raise Unavailable(f'Could not publish again: {exc}') from None
        entry = self._write_log(job, f'Manual retry: publishing {sent} product(s) again',
                                'WARNING')
        self._save_durably(job)
        self._announce(job, entry)

    def update_product(self, job_id, product_id, changes, message, level='INFO'):
        """Record a change to one product of a finished job (the follower's)."""
        def change(job):
            for product in (job.get('result') or {}).get('products', []):
                if str(product.get('productId')) == product_id:
                    product.update(changes)
        self._change_finished(job_id, change, message, level)

    def update_order(self, job_id, changes, message, level='INFO'):
        """Record where a forwarded order stands in its job's result (the order follower's)."""
        def change(job):
            job['result'] = {**(job.get('result') or {}), **changes}
        self._change_finished(job_id, change, message, level)

    def note_on_job(self, job_id, message, level='INFO'):
        """Add a log line to a job, finished or not."""
        self._change_finished(job_id, lambda job: None, message, level)

    def _change_finished(self, job_id, change, message, level):
        job = self.jobs.get(job_id)
        if job is None:
            return  # cleaned up meanwhile: nobody can see it any more
        if isinstance(job, ArchivedJob):
            job = self.jobs[job_id] = job.load()
        with self._changing(job_id):
            change(job)
            entry = self._write_log(job, message, level)
            self._save_durably(job)
        self._announce(job, entry)

    # Orders ------------------------------------------------------------------

    def order_desk(self):
        """What forwards Shopify sales to Printify, or None when they are not
        the engine's to send: no Shopify or no Printify, a dry run, or a
        Printify shop connected to a channel (Printify gets its orders itself)."""
        by_name = {publisher.name: publisher for publisher in self.publishers}
        printify, shopify = by_name.get('printify'), by_name.get('shopify')
        if printify is None or shopify is None or self.settings.dry_run:
            return None
        return OrderDesk(printify, shopify, self.settings) if printify.kind() == 'api' else None

    def take_order(self, topic, order):
        """The order job of a Shopify order webhook: made on the first
        ``orders/create`` of an order with a product the engine made, the
        same one for every repeat. None for a sale of other products."""
        order_id = str(order.get('admin_graphql_api_id') or
                       f'gid://shopify/Order/{order.get("id")}')
        known = self.order_book.job_of(order_id)
        if topic == 'orders/cancelled' and known:
            self.cancel_sale(order_id, order.get('name'), known)
        if topic != 'orders/create':
            return known
        products = [product_gid(item.get('product_id')) for item in
                    order.get('line_items') or [] if item.get('product_id')]
        return self.take_sale(order_id, order.get('name'), products)

    def take_sale(self, order_id, name, products):
        """The order job of a Shopify order selling ``products`` (gids), or
        None when none of them is the engine's."""
        if not any(self.listings.printify_product(p) for p in products if p):
            log.info('Shopify order %s sells no product the engine made', name)
            return None
        request = {'shopifyOrderId': order_id, 'shopifyOrderName': str(name)}
        return self.order_book.take(order_id, lambda: self.submit(
            'order', request, self.settings.order_priority)[0]['id'])

    def cancel_sale(self, order_id, name, job_id):
        """A Shopify cancellation of a taken order: its Printify order is
        cancelled while that is allowed (adapters/shipments.py)."""
        job = self.jobs.get(job_id)
        if job is None:
            return
        unfinished = job['status'] not in (COMPLETED, FAILED, CANCELLED)
        if self.order_follower.cancel(order_id, job_id, unfinished):
            self.note_on_job(job_id, f'Shopify: order {name} was cancelled', 'WARNING')

    def reconcile_orders(self):
        """Take the Shopify orders that no webhook brought, and the
        cancellations (every ORDER_POLL_INTERVAL_MS); how many were taken."""
        desk = self.order_desk()
        if desk is None:
            return 0
        intake, since = self.order_book.window(self.started_at / 1000)
        taken, read_to = 0, since
        for order in desk.recent_orders(since):
            read_to = max(read_to, order['updatedAt'])
            known = self.order_book.job_of(order['id'])
            if known and order['cancelled']:
                self.cancel_sale(order['id'], order['name'], known)
            elif not known and not order['cancelled'] and order['unfulfilled'] and \
                    order['createdAt'] >= intake and order['id'] not in self._not_ours:
                products = desk.products_of(order['id'])
                if self.take_sale(order['id'], order['name'], products) is None:
                    if len(self._not_ours) > 10_000:  # bounded; reading one again is cheap
                        self._not_ours.clear()
                    self._not_ours.add(order['id'])  # read once, however often it changes
                else:
                    taken += 1
        self.order_book.read_to(read_to)
        if taken:
            log.warning('took %d Shopify order(s) that no webhook brought', taken)
        return taken

    def register_webhooks(self):
        """At start, with PUBLIC_URL set: subscribe the webhook routes to the
        order topics (a WARNING when that fails; the reconciler still polls)."""
        try:
            desk = self.order_desk()
            if desk is not None:
                added = desk.register_webhooks(self.public_url,
                                               self.settings.printify_webhook_secret)
                log.info('order webhooks: %s', ', '.join(added) or 'already subscribed')
        except AdapterError as exc:
            log.warning('order webhooks were not subscribed: %s', exc)

    def follow_orders(self):
        """The order poll: Shopify's recent orders, then the forwarded ones."""
        try:
            self.reconcile_orders()
        except AdapterError as exc:  # Shopify is down: read again next time
            log.warning('reading recent Shopify orders: %s', exc)
        self.order_follower.poll()

    def cleanup(self, max_age_ms):
        """Remove finished jobs whose completedAt is at least max_age_ms ago."""
        cutoff = now_ms() - max_age_ms
        old = [job_id for job_id, job in self.jobs.items()
               if job['status'] in FINISHED and job['completedAt'] is not None
               and job['completedAt'] <= cutoff]
        for job_id in old:
            job = self.jobs.pop(job_id)
            self.counts[job['status']] -= 1
            self.store.delete(job_id)
        if old:
            log.info('cleanup removed %d finished jobs', len(old))
            self.events.emit(JOB_REMOVED, {'ids': old})
            self.events.emit(METRICS, self.metrics())
        return len(old)

    # Moves: the only place that writes `status` --------------------------------

    def _move(self, job, move, message, level='INFO', meta=None, **fields):
        """Make ``move`` (see MOVES) on ``job`` with ``fields``, logging
        ``message``; False when the job's status no longer allows it (a move
        made meanwhile came first).

        The changed job is saved first and applied after, so memory never
        holds a status the disk does not: a StoreError raises Unavailable and
        leaves the job as it was. A job makes one move at a time (a second
        waits for the first's save). ``meta``: amounts to add to the engine's
        counters, saved with it.
        """
        leaves, status = MOVES[move]
        with self._changing(job['id']):
            if job['status'] not in leaves:
                return False
            entry = log_entry(message, level)
            changed = {**job, **fields, 'status': status,
                       'logs': [*job['logs'], entry][-self.settings.max_job_logs:]}
            # The counters go in before the save, so that any meta line written
            # meanwhile (a submit's) carries them too; out again if it fails.
            self._add_to_meta(meta or {}, 1)
            try:
                self._save_durably(changed, meta=meta is not None)
            except Unavailable:
                self._add_to_meta(meta or {}, -1)
                raise
            self.counts[job['status']] -= 1
            self.counts[status] += 1
            job.update(changed)
        self._log_line(job, message, level)
        self._announce(job, entry)
        return True

    def _add_to_meta(self, amounts, sign):
        for key, amount in amounts.items():
            self.meta[key] += sign * amount

    def _finish(self, job, move, message, level, **fields):
        """A move that ends the job, with its counters; False as in _move."""
        status = MOVES[move][1]
        ended = self.clock.now_ms()
        counters = {FINISH_COUNTERS[status]: 1}
        if status == COMPLETED and job['startedAt']:
            counters.update(jobTimeTotal=ended - job['startedAt'], jobTimeCount=1)
        self.meta['lastActivity'] = ended
        if not self._move(job, move, message, level, meta=counters, completedAt=ended,
                          nextRetryAt=None, **fields):
            return False
        if status != CANCELLED and job['startedAt']:
            self.job_seconds.labels(job['type'], status).observe(
                (ended - job['startedAt']) / 1000)
        if status != CANCELLED:
            self._remember_outcome(ended, status == COMPLETED)
        return True

    def _until_saved(self, job, move):
        """``move()`` (one that ends an attempt) until the store takes it.
        Until then the job is running with nothing behind it, and giving up
        would leave it to nobody. If the engine stops first, the job is
        running on disk, and the next start resumes it from its checkpoints."""
        for attempt in itertools.count(1):
            try:
                return move()
            except Unavailable as exc:
                if self.stopping:
                    log.warning('%s: the end of its attempt was not saved: %s', job['id'], exc)
                    return False
                pause = self.store_backoff.backoff(attempt)
                log.error('%s: the end of its attempt was not saved (%s); trying again in '
                          '%.1f s', job['id'], exc, pause)
                self.store_backoff.sleep(pause)

    def save(self, job):
        """Save ``job`` as memory holds it (a checkpoint, a log line); returns
        the store's waitable. Not while a move of the job is on its way to
        disk: that line would be followed by one with the status it left."""
        with self._changing(job['id']):
            return self.store.save(job)

    def save_checkpoint(self, job, key):
        """Save one checkpoint of ``job``; returns the store's waitable."""
        with self._changing(job['id']):
            return self.store.save_checkpoint(job, key)

    def _announce(self, job, entry):
        """The events of a change, once it is on disk: watchers never hear of
        a change that a crash could still take back."""
        self.events.emit(LOG, {'jobId': job['id'], **entry})
        self.events.emit(JOB_UPDATE, public_job(job, logs=False))

    def add_log(self, job, message, level='INFO', save=False):
        entry = self._write_log(job, message, level)
        self.events.emit(LOG, {'jobId': job['id'], **entry})
        if save or job['status'] in FINISHED:  # a finished job changes only through a save
            self.save(job)

    def _write_log(self, job, message, level='INFO', engine_level=None):
        """Append a line to the job's log (and the engine's, at ``level`` unless
        ``engine_level`` is given); returns it."""
        entry = log_entry(message, level)
        job['logs'].append(entry)
        del job['logs'][:-self.settings.max_job_logs]
        self._log_line(job, message, level, engine_level)
        return entry

    @staticmethod
    def _log_line(job, message, level, engine_level=None):
        log.log(engine_level or LOG_LEVELS.get(level, logging.INFO), '%s: %s', job['id'],
                message, extra={'job_id': job['id']})

    def set_progress(self, job, percent):
        # Never backwards within an attempt: a resumed job skips its finished
        # steps quickly, and its bar should not jump back and forth meanwhile.
        percent = max(0, min(100, int(percent)))
        if percent > job['progress'] and job['status'] == RUNNING:
            job['progress'] = percent
            self.events.emit(JOB_PROGRESS, {'id': job['id'], 'status': job['status'],
                                            'progress': percent})

    # The queue and the workers -----------------------------------------------

    def _enqueue(self, job):
        due = job.get('nextRetryAt')
        if due and due > self.clock.now_ms():
            self.timers.add(job['id'], due)
        else:
            self.queue.push(job['id'], job['priority'])

    def _due(self, job_id):
        """A pending job's wait is over (its retry's backoff, or a pause after
        the store refused its start): back into the queue."""
        job = self.jobs.get(job_id)
        if job is None or job['status'] != PENDING or self.stopping:
            return
        if job.get('nextRetryAt'):
            job['nextRetryAt'] = None
            self.add_log(job, f'Retrying job (attempt {job["retryCount"]}/'
                         f'{job["maxRetries"]})', save=True)
        self.queue.push(job_id, job['priority'])

    def _work(self):
        while not self.stopping:
            job_id = self.queue.pop()
            job = self.jobs.get(job_id) if job_id else None
            if job is not None and job['status'] == PENDING:
                try:
                    self._run_attempt(job)
                except Exception:
                    log.exception('worker error on %s', job_id)

    def _run_attempt(self, job):
        """One attempt of ``job``, from its start to the move that ends it."""
        try:
            started = self._move(job, 'start', f'Job started (type: {job["type"]})',
                                 startedAt=self.clock.now_ms(), nextRetryAt=None, progress=0)
        except Unavailable as exc:  # still pending, and it comes back after a pause
            log.error('%s could not start: %s; trying again in %.0f s', job['id'], exc,
                      STORE_RETRY_MS / 1000)
            self.timers.add(job['id'], self.clock.now_ms() + STORE_RETRY_MS)
            return
        if not started:
            return  # cancelled meanwhile
        attempt = gevent.spawn(perform_job, JobContext(self, job))
        self._attempts[job['id']] = attempt
        try:
            attempt.join(timeout=self.settings.job_timeout_ms / 1000)
            if not attempt.ready():
                attempt.kill(block=True, timeout=10)
                outcome = Outcome(error=JobFailure('Job timeout', retryable=True))
            elif job['status'] != RUNNING or not isinstance(attempt.value, Outcome):
                return  # cancelled, or interrupted by a stop (then it was killed)
            else:
                outcome = attempt.value
        finally:
            self._attempts.pop(job['id'], None)
        if outcome.succeeded:
            self._complete(job, outcome.result)
        else:
            self._attempt_failed(job, self._failure_of(job, outcome.error))

    def _failure_of(self, job, exc):
        failure = as_job_failure(exc)
        if not isinstance(exc, (PodEngineError, requests.RequestException)):
            log.error('%s raised %r', job['id'], exc, exc_info=exc)
        return failure

    def _complete(self, job, result):
        self.follower.watch(job['id'], result.get('products'))  # before it reads finished
        if job['type'] == 'order':
            self.order_follower.watch(job['id'], result)
        self.listings.note(job['id'], products_of(result))
        self._until_saved(job, lambda: self._finish(
            job, 'complete', 'Job completed successfully', 'SUCCESS', progress=100,
            result=result, error=None))

    def _attempt_failed(self, job, failure):
        message = str(failure) or type(failure).__name__
        if failure.retryable and job['retryCount'] < job['maxRetries']:
            count = job['retryCount'] + 1
            delay = self.retry_delay_ms(count)
            due = self.clock.now_ms() + delay
            if self._until_saved(job, lambda: self._move(
                    job, 'back off', f'Job failed: {message}; retry {count}/'
                    f'{job["maxRetries"]} in {delay / 1000:.1f}s', 'WARNING', error=message,
                    result=failure.result, retryCount=count, nextRetryAt=due)):
                self.stats['retries'] += 1
                self.timers.add(job['id'], due)
        else:
            self.follower.watch(job['id'], (failure.result or {}).get('products'))
            self.listings.note(job['id'], products_of(failure.result))
            self._until_saved(job, lambda: self._finish(
                job, 'fail', f'Job failed: {message}', 'ERROR', error=message,
                result=failure.result))

    def retry_delay_ms(self, attempt):
        """RETRY_DELAY_MS x 2^(attempt-1), at most RETRY_MAX_DELAY_MS, with jitter."""
        return int(self.job_backoff.backoff(attempt) * 1000)

    # Metrics and health ------------------------------------------------------

    def metrics(self):
        meta = self.meta
        finished = meta['completedJobs'] + meta['failedJobs']
        average = meta['jobTimeTotal'] / meta['jobTimeCount'] if meta['jobTimeCount'] else 0
        return {
            'totalJobs': meta['totalJobs'], 'completedJobs': meta['completedJobs'],
            'failedJobs': meta['failedJobs'], 'cancelledJobs': meta['cancelledJobs'],
            'runningJobs': self.counts[RUNNING], 'pendingJobs': self.counts[PENDING],
            'averageJobTime': round(average),
            'successRate': round(meta['completedJobs'] / finished * 100, 2) if finished else 0,
            'uptime': now_ms() - self.started_at, 'lastActivity': meta['lastActivity'],
        }

    def probe_services(self):
        """Ask each backend whether it is up, all at once, with a time limit."""
        adapters = {self.image_backend, self.prompt_writer, *self.publishers}
        probes = {adapter: gevent.spawn(adapter.health) for adapter in adapters}
        gevent.joinall(probes.values(), timeout=5)
        status = {name: False for name in ('comfyui', 'printify', 'shopify')}
        for adapter, probe in probes.items():
            up = probe.successful() and bool(probe.value)
            probe.kill(block=False)
            if adapter is not self.prompt_writer or adapter.name != 'template':
                status[adapter.name] = status.get(adapter.name, False) or up
        self.image_up = probes[self.image_backend].successful() and bool(
            probes[self.image_backend].value)
        self.services = status

    def fulfilment_warnings(self):
        """Why orders might not reach a printer with this configuration."""
        return [warning for publisher in self.publishers
                for warning in publisher.fulfilment_warnings(self.publishers)]

    def health(self):
        """The status and the reasons for it. Unhealthy: no image can be drawn,
        a backend refuses its configuration, or at least half of the jobs that
        finished within HEALTH_WINDOW_MS failed (judged from HEALTH_MIN_SAMPLE
        of them: one failed test job must not take a fresh box out). Degraded:
        a publisher or the LLM is down."""
        unhealthy, degraded = [], []
        services, details = dict(self.services), {}
        if not self.image_up:
            unhealthy.append(f'the image backend ({self.image_backend.name}) is down')
        for adapter in {self.image_backend, self.prompt_writer, *self.publishers}:
            if problems := adapter.problems():  # learnt since the last probe, maybe
                unhealthy.extend(problems)
                services[adapter.name] = False
            if (detail := adapter.details()) is not None:
                details[adapter.name] = detail
        if problem := self.store.problem():
            unhealthy.append(problem)
        failing, outcomes = self.failure_rate()
        if failing:
            unhealthy.append(outcomes)
        needed = [*self.publishers] + ([self.prompt_writer]
                                       if self.prompt_writer.name != 'template' else [])
        degraded.extend(f'{adapter.name} is down' for adapter in needed
                        if not services.get(adapter.name) and not adapter.problems())
        status = 'unhealthy' if unhealthy else 'degraded' if degraded else 'healthy'
        reasons = unhealthy + degraded or ['every backend is up']
        report = {'status': status, 'uptime': now_ms() - self.started_at,
                  'reasons': reasons + ([] if failing else [outcomes]),
                  'metrics': self.metrics(), 'services': services}
        if details:
            report['details'] = details
        return report

    def failure_rate(self):
        """(failing?, a sentence) from the jobs finished within the window."""
        window = self.settings.health_window_ms
        since = now_ms() - window
        recent = [ok for ended, ok in self.meta['recent'] if ended >= since]
        failed, finished = recent.count(False), len(recent)
        sentence = (f'{failed} of the {finished} jobs finished in the last '
                    f'{span(window)} failed')
        if finished < self.settings.health_min_sample:
            return False, (f'{sentence}; {self.settings.health_min_sample} are needed '
                           f'to judge')
        return failed * 2 >= finished, sentence

    def _remember_outcome(self, ended, ok):
        """Keep the outcomes /health judges: those within the window, the
        newest RECENT_OUTCOMES of them (enough to judge a rate by)."""
        since = ended - self.settings.health_window_ms
        kept = [entry for entry in self.meta['recent']
                if isinstance(entry, list) and entry[0] >= since]  # not 1.x booleans
        self.meta['recent'] = (kept + [[ended, ok]])[-RECENT_OUTCOMES:]

    def count_clients_with(self, transport, count):
        """``count()`` says how many event clients ``transport`` has (for /metrics)."""
        self._client_counters[transport] = count

    def count_clients(self):
        return {transport: count() for transport, count in self._client_counters.items()}

    def info(self):
        return {
            'name': 'POD Engine', 'version': __version__,
            'config': {
                'maxConcurrent': self.settings.max_concurrent_jobs,
                'maxRetries': self.settings.max_job_retries,
                'persistenceEnabled': self.settings.enable_persistence,
                'monitoringEnabled': self.settings.enable_monitoring,
                'jobTimeoutMs': self.settings.job_timeout_ms,
                'retryDelayMs': self.settings.retry_delay_ms,
                'imageBackend': self.image_backend.describe(),
                'promptWriter': self.prompt_writer.describe(),
                'platforms': [publisher.describe() for publisher in self.publishers],
                'shops': {publisher.name: publisher.facts() for publisher in self.publishers
                          if publisher.facts() is not None},
                'productsPublishing': len(self.follower),
                'productTypes': sorted(self.product_types),
                'customHandlers': sorted(self.handlers),
            },
        }


###############################################################################
# Access control ##############################################################
###############################################################################

class Gate:
    """POD_API_KEY and CORS_ORIGINS, checked before any route runs.

    With a key set, /api/*, /metrics and /ws answer 401 without it (the
    Socket.IO connect handler checks its own), and /health tells strangers
    only whether the engine is up.
    """

    def __init__(self, settings):
        self.key = settings.pod_api_key.encode() if settings.pod_api_key else None
        self.origins = set(settings.cors_origins)

    def allows(self, environ, auth=None):
        if self.key is None:
            return True
        offered = presented_key(environ, auth)
        # compare_digest: how long a wrong key takes must not tell how wrong it is.
        return offered is not None and hmac.compare_digest(offered.encode(), self.key)

    def wrap(self, app):
        """The WSGI app behind this gate."""
        def gated(environ, start_response):
            path = environ.get('PATH_INFO', '')
            cors = [] if path.startswith('/socket.io') else self.cors_headers(environ)
            if environ.get('REQUEST_METHOD') == 'OPTIONS' and cors:
                start_response('204 No Content', cors)
                return []
            if is_guarded(path) and not self.allows(environ):
                start_response('401 Unauthorized', [
                    ('Content-Type', 'application/json'), ('WWW-Authenticate', 'Bearer'),
                    *cors])
                return [b'{"error": "Missing or wrong API key: send Authorization: '
                        b'Bearer <key> or X-API-Key"}']
            if not cors:
                return app(environ, start_response)
            return app(environ, lambda status, headers, exc_info=None: start_response(
                status, headers + cors, exc_info))
        return gated

    def cors_headers(self, environ):
        origin = environ.get('HTTP_ORIGIN')
        if origin not in self.origins:
            return []
        return [('Access-Control-Allow-Origin', origin), ('Vary', 'Origin'),
                ('Access-Control-Allow-Methods', 'GET, POST, OPTIONS'),
                ('Access-Control-Allow-Headers', 'Authorization, Content-Type, X-API-Key')]


def is_guarded(path):
    return path.startswith('/api/') or path in ('/metrics', '/ws')


def presented_key(environ, auth=None):
    """The key a request offers: a header, or for WebSockets ``auth`` or ?key=."""
    header = environ.get('HTTP_AUTHORIZATION', '')
    if header[:7].lower() == 'bearer ':
        return header[7:].strip()
    if environ.get('HTTP_X_API_KEY'):
        return environ['HTTP_X_API_KEY']
    if isinstance(auth, dict) and isinstance(auth.get('key') or auth.get('token'), str):
        return auth.get('key') or auth.get('token')
    if environ.get('PATH_INFO', '') in ('/ws', '/socket.io/'):
        query = parse_qs(environ.get('QUERY_STRING', ''))
        for name in ('key', 'api_key'):
            if query.get(name):
                return query[name][0]
    return None


def check_binding(settings):
    """Refuse to serve other machines without a key, unless told to."""
    host = settings.host
    try:
        loopback = host == 'localhost' or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not settings.pod_api_key and not settings.allow_unauthenticated:
        raise ConfigError(f'HOST={host} lets other machines reach the engine, and its tokens '
                          f'can create real products: set POD_API_KEY, or '
                          f'ALLOW_UNAUTHENTICATED=true to accept that risk')


###############################################################################
# HTTP API ####################################################################
###############################################################################

class JsonApi:
    """Bottle plugin: dicts and lists become JSON; PodEngineErrors become
    ``{"error": message}`` with their status."""

    name = 'json_api'
    api = 2

    def apply(self, callback, route):
        def wrapper(*args, **kwargs):
            try:
                body = callback(*args, **kwargs)
            except ApiError as exc:
                return json_response({'error': str(exc)}, exc.status)
            if isinstance(body, bottle.HTTPResponse) or not isinstance(body, (dict, list)):
                return body
            return json_response(body)
        return wrapper


def json_response(body, status=200):
    """``body`` as JSON; bytes are taken as JSON already encoded."""
    text = body if isinstance(body, bytes) else json.dumps(body)
    return bottle.HTTPResponse(text, status,
                               {'Content-Type': 'application/json'})


def read_json(limit, required=True):
    """The request body as a JSON object, or an ApiError saying what is wrong."""
    request = bottle.request
    if request.content_length > limit:
        raise PayloadTooLarge(f'Request body is larger than {limit} bytes')
    raw = read_body(request.environ, limit)
    if len(raw) > limit:
        raise PayloadTooLarge(f'Request body is larger than {limit} bytes')
    if not raw.strip():
        if required:
            raise ValidationError('Request body must be a JSON object')
        return {}
    if request.content_type.split(';')[0].strip().lower() != 'application/json':
        raise UnsupportedMediaType('Content-Type must be application/json')
    try:
        body = json.loads(raw.decode('utf-8'), parse_constant=refuse_constant,
                          parse_float=integral_as_int)
    except UnicodeDecodeError:
        raise ValidationError('Request body must be UTF-8 encoded JSON') from None
    except (ValueError, RecursionError) as exc:
        raise ValidationError(f'Invalid JSON: {exc}') from None
    if not isinstance(body, dict):
        raise ValidationError('Request body must be a JSON object')
    return body


def read_body(environ, limit):
    """At most ``limit + 1`` bytes of the body. gevent has already undone a
    chunked transfer encoding, so the input is read as it is (Bottle would
    try to de-chunk it a second time)."""
    try:
        return environ['wsgi.input'].read(limit + 1)
    except (OSError, ValueError):  # the client hung up half way
        raise ValidationError('Request body ended before its declared length') from None


def refuse_constant(name):
    raise ValueError(f'{name} is not valid JSON')


def integral_as_int(text):
    # JSON Schema counts 3.0 as an integer, so `"seed": 3.0` passes validation;
    # the engine then counts and seeds with it, which needs a Python int.
    number = float(text)
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def create_app(engine, gate=None):
    """The Bottle app with every route of the API."""
    app = bottle.Bottle()
    app.install(JsonApi())
    limit = engine.settings.max_body_bytes
    add_status_routes(app, engine, gate or Gate(engine.settings))
    add_job_routes(app, engine, limit)
    add_generate_routes(app, engine, limit)
    add_file_routes(app, engine)
    add_webhook_routes(app, engine, limit)
    add_error_pages(app)
    return app


def add_status_routes(app, engine, gate):
    @app.get('/health')
    def health():
        # ?report=true: 200 whatever the status, for a page that shows the
        # state (a 503 is a red console error in every browser); a load
        # balancer's probe leaves it out and is answered 503 when unhealthy.
        as_report = query_bool(bottle.request.query, 'report')
        report = engine.health()
        if not gate.allows(bottle.request.environ):
            report = {'status': report['status'], 'uptime': report['uptime']}
        unhealthy = report['status'] == 'unhealthy' and not as_report
        return json_response(report, 503 if unhealthy else 200)

    @app.get('/api/info')
    def info():
        return engine.info()

    @app.get('/api/metrics')
    def metrics():
        return engine.metrics()

    @app.get('/api/openapi.json')
    def openapi():
        return served_document(engine.schemas.document, gate)

    @app.get('/metrics')
    def prometheus():
        return bottle.HTTPResponse(generate_latest(engine.registry), 200,
                                   {'Content-Type': CONTENT_TYPE_LATEST})

    @app.get('/')
    def index():
        if (WEB_DIR / 'index.html').is_file():
            return bottle.static_file('index.html', root=str(WEB_DIR))
        return {'name': 'POD Engine', 'version': __version__,
                'endpoints': ['/health', '/api/info', '/api/metrics', '/api/jobs',
                              '/api/generate', '/api/generate/batch', '/socket.io', '/ws']}

    @app.get('/web/<path:path>')
    def web(path):
        target = data_file(WEB_DIR, path)
        return bottle.static_file(str(target.relative_to(WEB_DIR)), root=str(WEB_DIR))


def served_document(document, gate):
    """The API document as this engine applies it. The file lets a request
    come without credentials (``{}`` in ``security``), as an engine without
    POD_API_KEY does; with the key set, the guarded operations need it."""
    if gate.key is None:
        return document
    return {**document, 'security': [option for option in document['security'] if option]}


def add_job_routes(app, engine, limit):
    @app.post('/api/jobs')
    def submit():
        body = read_json(limit)
        if not body.get('type') or not body.get('request'):
            raise ValidationError('Missing required fields: type, request')
        engine.schemas.check('SubmitBody', body)
        request = finish_request(engine, body['type'], body['request'], 'request.')
        return created(engine, body['type'], request, body)

    @app.get('/api/jobs')
    def list_jobs():
        query = bottle.request.query
        status = query.get('status') or None
        if status is not None and status not in STATUSES:
            raise ValidationError(f'status must be one of {", ".join(STATUSES)}')
        order = query.get('order') or 'oldest'
        if order not in ('oldest', 'newest'):
            raise ValidationError('order must be oldest or newest')
        job_type = query.get('type') or None
        if job_type is not None and job_type not in JOB_TYPES:
            raise ValidationError(f'type must be one of {", ".join(JOB_TYPES)}')
        jobs = engine.find(status, order == 'newest', query_int(query, 'offset', 0),
                           query_int(query, 'limit', None), job_type)
        bottle.response.content_type = 'application/json'
        return stream_jobs(engine, jobs)

    # Not /api/jobs/cleanup, a POST-only resource: its 405 says Allow: POST,
    # where this route would add GET (and answer GET with "Job not found").
    @app.get('/api/jobs/<job_id:re:(?!cleanup$)[^/]+>')
    def get_job(job_id):
        shown = shown_json(engine, engine.get(job_id))
        if not shown:
            raise NotFound('Job not found')  # its submit is not on disk yet
        return json_response(shown)

    @app.post('/api/jobs/<job_id>/cancel')
    def cancel(job_id):
        engine.cancel(job_id)
        return {'success': True}

    @app.post('/api/jobs/<job_id>/retry')
    def retry(job_id):
        engine.retry(job_id)
        return {'success': True}

    @app.post('/api/jobs/cleanup')
    def cleanup():
        body = engine.schemas.check('CleanupBody', read_json(limit, required=False))
        return {'cleared': engine.cleanup(int(body.get('maxAge', DAY_MS)))}


def add_webhook_routes(app, engine, limit):
    """Deliveries from the platforms: outside POD_API_KEY, each one signed."""
    @app.post('/webhooks/shopify')
    def shopify_webhook():
        raw = signed_body(limit, 'X-Shopify-Hmac-Sha256', 'SHOPIFY_WEBHOOK_SECRET',
                          lambda body, signature: verify_shopify(
                              engine.settings.shopify_webhook_secret, body, signature))
        topic = bottle.request.get_header('X-Shopify-Topic') or ''
        return {'received': True, 'jobId': engine.take_order(topic, webhook_json(raw))}

    @app.post('/webhooks/printify')
    def printify_webhook():
        raw = signed_body(limit, 'X-Pfy-Signature', 'PRINTIFY_WEBHOOK_SECRET',
                          lambda body, signature: verify_printify(
                              engine.settings.printify_webhook_secret, body, signature))
        return {'received': True, 'followed': engine.order_follower.printify_event(
            webhook_json(raw))}


def signed_body(limit, header, secret_name, verify):
    """The raw body of a webhook whose ``header`` signs it, or 401."""
    request = bottle.request
    if request.content_length > limit:
        raise PayloadTooLarge(f'Request body is larger than {limit} bytes')
    raw = read_body(request.environ, limit)
    if not verify(raw, request.get_header(header)):
        raise Unauthorized(f'Missing or wrong {header} (signed with {secret_name})')
    return raw


def webhook_json(raw):
    try:
        body = json.loads(raw.decode('utf-8'))
    except (UnicodeDecodeError, ValueError):
        raise ValidationError('The webhook body is not JSON') from None
    if not isinstance(body, dict):
        raise ValidationError('The webhook body is not a JSON object')
    return body


def add_generate_routes(app, engine, limit):
    @app.post('/api/generate')
    def generate():
        body = engine.schemas.check('GenerateBody', read_json(limit))
        options = {key: body.pop(key) for key in ('priority', 'maxRetries') if key in body}
        return created(engine, 'generate', finish_request(engine, 'generate', body), options)

    @app.post('/api/generate/batch')
    def batch():
        body = read_json(limit)
        if not isinstance(body.get('items'), list):
            raise ValidationError('Items array is required')
        engine.schemas.check('BatchBody', body)
        request = finish_request(engine, 'batch', {'items': body['items']})
        return created(engine, 'batch', request, body)


def shown_json(engine, job):
    """``public_json(job)``, or the job as it was last on disk while a change
    to it is still on its way there (b'' if it never was): nobody sees a
    state that a crash the next moment would take back."""
    text = None if isinstance(job, ArchivedJob) else engine.store.shown(job['id'])
    return public_json(job) if text is None else text.encode('utf-8')


def stream_jobs(engine, jobs, chunk=50):
    """A job list as a JSON array, sent a chunk at a time: listing 100k jobs
    neither holds the hub for long nor builds the whole body in memory."""
    yield b'['
    separator = b''
    for start in range(0, len(jobs), chunk):
        parts = [listed_json(engine, job) for job in jobs[start:start + chunk]]
        parts = [part for part in parts if part]  # not on disk (yet, or any more)
        if parts:
            yield separator + b','.join(parts)
            separator = b','
        gevent.sleep(0)  # let other requests in between chunks
    yield b']'


def listed_json(engine, job):
    try:
        return shown_json(engine, job)
    except OSError:  # removed from the archive since the list was taken
        return b''


def finish_request(engine, job_type, request, where=''):
    """A request that fits the schema, with its defaults and the checks a
    schema cannot make (a custom handler's own)."""
    if job_type == 'generate':
        return {**engine.schemas.defaults('GenerateItem'), **request}
    if job_type == 'batch':
        return {'items': [finish_request(engine, 'generate', item) for item in request['items']]}
    check = engine.validators.get(request['handler'])
    if check is None:
        return dict(request)
    try:
        return check(dict(request), engine.product_types)
    except ValueError as exc:
        raise ValidationError(f'{where.rstrip(".") or "request"}: {exc}') from None


def created(engine, job_type, request, options):
    priority = options.get('priority') or 'normal'
    retries = options.get('maxRetries')
    if retries is None:
        retries = engine.settings.max_job_retries
    screen(request, engine.blocklist)
    job, shown = engine.submit(job_type, request, priority, retries)
    return json_response(b'{"jobId": %s, "job": %s}' % (json.dumps(job['id']).encode(), shown),
                         201)


def screen(request, blocklist):
    """Refuse a request whose own words use a blocked term (a trademark)."""
    parts = [('', request)] + [(f'items[{index}].', item)
                               for index, item in enumerate(request.get('items', []))]
    for where, part in parts:
        for key in ('prompt', 'theme', 'style', 'niche', 'title', 'tags'):
            term = blocklist.find(part.get(key))
            if term:
                raise ValidationError(f'{where}{key} uses the blocked term {term!r}: '
                                      f'trademarks and brand names are refused '
                                      f'(BLOCKED_TERMS_FILE)')


def query_int(query, name, default):
    value = query.get(name)
    if value is None or value == '':
        return default
    if not value.isdigit() or int(value) > 10**9:
        raise ValidationError(f'{name} must be a non-negative integer')
    return int(value)


def query_bool(query, name):
    value = query.get(name) or 'false'
    if value not in ('true', 'false'):
        raise ValidationError(f'{name} must be true or false')
    return value == 'true'


def data_file(root, path):
    """``path`` under ``root``, or NotFound: never a file outside it."""
    try:
        target = (root / path).resolve()
        # resolve() follows symlinks, so a link that points out is refused too.
        if target.is_relative_to(root) and target.is_file():
            return target
    except (OSError, ValueError):  # a name the OS refuses: too long, a NUL byte
        pass
    raise NotFound('File not found')


def add_file_routes(app, engine):
    root = engine.settings.data_path

    @app.get('/files/<path:path>')
    def serve(path):
        target = data_file(root, path)
        return bottle.static_file(str(target.relative_to(root)), root=str(root))

    @app.get('/thumbs/<path:path>')
    def thumbnail(path):
        """A small PNG of an image under DATA_DIR (?w=, 32 to 1024 px, default 256),
        made once and cached under DATA_DIR/.thumbs."""
        target = data_file(root, path)
        width = query_int(bottle.request.query, 'w', 256)
        if not 32 <= width <= 1024:
            raise ValidationError('w must be from 32 to 1024')
        thumb = root / '.thumbs' / f'{width}' / target.relative_to(root)
        if not thumb.is_file() or thumb.stat().st_mtime < target.stat().st_mtime:
            run_in_thread(make_thumbnail, target, thumb, width)
        return bottle.static_file(str(thumb.relative_to(root)), root=str(root),
                                  mimetype='image/png')


def make_thumbnail(source, target, width):
    try:
        with Image.open(source) as image:
            image.thumbnail((width, width * 2), Image.LANCZOS)
            # A temp file of its own: two first requests of one thumbnail
            # render it side by side.
            write_atomic(target, lambda f: image.save(f, 'PNG'), 'thumbnails')
    except (OSError, ValueError, Image.DecompressionBombError, AdapterError):
        raise NotFound('Not an image') from None


def add_error_pages(app):
    messages = {400: 'Bad request', 404: 'Not found', 405: 'Method not allowed',
                413: 'Request body too large', 500: 'Internal server error'}
    for status, text in messages.items():
        app.error(status)(error_page(text))


def error_page(text):
    def page(error):
        bottle.response.content_type = 'application/json'
        if error.status_code == 500:
            log.error('unhandled error: %s', error.exception, exc_info=error.exception)
        detail = error.body if error.status_code == 400 and isinstance(error.body, str) else text
        return json.dumps({'error': detail})
    return page


###############################################################################
# WebSocket: Socket.IO and plain /ws ##########################################
###############################################################################

# Events wait up to this long so they can share a send(): a job's submit, start
# and finish (six events) mostly fit in one batch, and delivery stays well
# under the 100 ms the monitors bench asks for.
SOCKETIO_BATCH_SECONDS = 0.025


def create_socketio(engine, gate):
    """A Socket.IO server that broadcasts every engine event to every client."""
    sio = EventServer(SOCKETIO_BATCH_SECONDS, async_mode='gevent', logger=False,
                      engineio_logger=False, cors_allowed_origins=sorted(gate.origins) or None)

    @sio.on('connect')
    def connect(sid, environ, auth=None):
        if not gate.allows(environ, auth):
            raise socketio.exceptions.ConnectionRefusedError('Missing or wrong API key')

    engine.events.add_listener(sio.broadcast)
    return sio


class EventServer(socketio.Server):
    """A Socket.IO server that broadcasts in batches, ``interval`` apart.

    Through Engine.IO, every event costs every client a queue hop, a wake-up
    of its writer, its own WebSocket frame and a send(): at 500 clients and
    ~120 events/s that filled the hub (bench/monitors.py: HTTP p99 0.3-0.5 s,
    jobs falling behind). So a batch is encoded and framed once, and goes to
    each WebSocket client in one send() (see FrameWriter). Order is kept; an
    event waits at most ``interval`` (its data is a fresh dict, so waiting does
    not change it).
    """

    def __init__(self, interval, **options):
        super().__init__(**options)
        self.interval = interval
        self._pending = []
        self._timer = None

    def broadcast(self, event, data):
        if not self.eio.sockets:
            return  # nobody to tell: a client that connects later asks for the state
        self._pending.append((event, data))
        if self._timer is None:
            self._timer = gevent.spawn_later(self.interval, self.flush)

    def flush(self):
        """Send the pending events now."""
        timer, self._timer = self._timer, None
        if timer is not None and timer is not gevent.getcurrent():
            timer.kill(block=False)
        batch, self._pending = self._pending, []
        try:
            self._send_batch(batch)
        except Exception:
            log.exception('Socket.IO broadcast of %d events failed', len(batch))

    def _send_batch(self, batch):
        texts = [self.packet_class(socketio.packet.EVENT, namespace='/',
                                   data=[event, data]).encode() for event, data in batch]
        if not all(isinstance(text, str) for text in texts):  # binary: not ours to frame
            for event, data in batch:
                self.emit(event, data)
            return
        frames = b''.join(websocket_text_frame('4' + text) for text in texts)  # 4: message
        for _sid, eio_sid in self.manager.get_participants('/', None):
            if not self._send_direct(eio_sid, frames):
                for text in texts:
                    self.eio.send(eio_sid, text)

    def _send_direct(self, eio_sid, frames):
        """``frames`` straight to the client's FrameWriter, if that keeps the order.

        Only for clients that connected over WebSocket, and only while nothing
        of Engine.IO's own (the connect answer, a ping) waits in its queue, or
        the event would overtake it.
        """
        writer = (self.environ.get(eio_sid) or {}).get('podengine.frames')
        eio_socket = self.eio.sockets.get(eio_sid)
        if writer is None or eio_socket is None or not eio_socket.queue.empty():
            return False
        return writer.send_now(frames)

    def disconnect(self, sid, *args, **kwargs):
        self.flush()  # events from before the goodbye still reach the client
        return super().disconnect(sid, *args, **kwargs)


def websocket_text_frame(text):
    """One unmasked, unfragmented text frame (RFC 6455 section 5.2)."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 2**16:
        return bytes((0x81, 126)) + size.to_bytes(2, 'big') + payload
    return bytes((0x81, 127)) + size.to_bytes(8, 'big') + payload


class PlainEventStream:
    """The engine's events as JSON text frames ``{"event", "data"}`` on /ws.

    Each event is encoded once and queued to every client; a client too slow
    to keep up with ``backlog`` frames is dropped rather than let memory grow.
    """

    def __init__(self, events, backlog=1000):
        self.clients = set()
        self.backlog = backlog
        events.add_listener(self.broadcast)

    def broadcast(self, event, data):
        if not self.clients:
            return
        frame = json.dumps({'event': event, 'data': data})
        for client in list(self.clients):
            try:
                client.put_nowait(frame)
            except gevent.queue.Full:
                log.warning('dropping a /ws client that fell %d events behind', self.backlog)
                self.clients.discard(client)
                client.queue.clear()
                client.put_nowait(None)
    def __call__(self, environ, start_response):
        ws = environ.get('wsgi.websocket')
        if ws is None:
            start_response('400 Bad Request', [('Content-Type', 'application/json')])
            return [b'{"error": "/ws expects a WebSocket upgrade"}']
        self.serve(ws)
        return []

    def serve(self, ws):
        frames = gevent.queue.Queue(self.backlog)
        self.clients.add(frames)
        reader = gevent.spawn(self._read_until_closed, ws, frames)
        try:
            while True:
                frame = frames.get()
                if frame is None:
                    break
                ws.send(frame)
        except Exception as exc:
            log.debug('/ws client left: %s', exc)
        finally:
            self.clients.discard(frames)
            reader.kill(block=False)
            ws.close()

    def close_all(self):
        """Tell every /ws client goodbye (at shutdown)."""
        for client in list(self.clients):
            client.queue.clear()
            client.put_nowait(None)

    @staticmethod
    def _read_until_closed(ws, frames):
        try:
            while ws.receive() is not None:
                pass
        except Exception:
            pass  # any read error means the client is gone
        frames.queue.clear()
        frames.put(None)


def create_wsgi(engine):
    """The whole WSGI app: /ws, Socket.IO on /socket.io, the API for the rest,
    all behind the gate. Returns it with the two event streams (to close them)."""
    gate = Gate(engine.settings)
    stream = PlainEventStream(engine.events)
    sio = create_socketio(engine, gate)
    api = socketio.WSGIApp(sio, create_app(engine, gate))

    def app(environ, start_response):
        if environ.get('PATH_INFO') == '/ws':
            return stream(environ, start_response)
        return api(environ, start_response)
    engine.count_clients_with('socketio', lambda: len(sio.eio.sockets))
    engine.count_clients_with('ws', lambda: len(stream.clients))
    gated = gate.wrap(app)
    gated.gate = gate  # the Handler checks WebSocket upgrades against it
    return gated, sio, stream


class Handler(WebSocketHandler):
    """WebSocket-capable request handler that sends small writes at once.

    Without TCP_NODELAY every keep-alive response waits ~40 ms: the response
    goes out in two writes and Nagle holds the second until the client's
    delayed ACK (measured: 1.1k vs 7k requests/s). A WebSocket's frames all go
    out through one FrameWriter.
    """

    def log_request(self):
        # The access line is formatted before the logger drops it (at INFO,
        # and below DEBUG the level is WARNING), on every request.
        if self.logger.isEnabledFor(logging.INFO):
            super().log_request()

    def handle(self):
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not a TCP socket
        super().handle()

    def run_application(self):
        gate = getattr(self.application, 'gate', None)
        if gate is not None and is_guarded(self.environ.get('PATH_INFO', '')) \
                and not gate.allows(self.environ):
            # Answer 401 as plain HTTP: once upgraded, no status can be sent.
            return gevent.pywsgi.WSGIHandler.run_application(self)
        return super().run_application()

    def upgrade_connection(self):
        result = super().upgrade_connection()
        if getattr(self, 'websocket', None) is not None:
            self.frames = FrameWriter(self.socket, self.websocket)
            # Every frame the WebSocket sends goes through raw_write (by default
            # the socket's sendall); EventServer finds the writer in the environ.
            self.websocket.raw_write = self.frames.write
            self.environ['podengine.frames'] = self.frames
        return result

    def run_websocket(self):
        try:
            super().run_websocket()
        finally:
            self.frames.flush()  # the close frame too, before the socket closes


class FrameWriter:
    """The one way out for a WebSocket's frames: its own and Socket.IO batches.

    A frame goes straight to the socket when nothing is waiting before it;
    otherwise it queues, and one sender greenlet sends all that has gathered
    in one send(). The WebSocket's writer waits once ``limit`` frames queue, as
    it would on a full socket; ``send_now`` (for EventServer) never waits.
    """

    def __init__(self, sock, websocket, limit=256):
        self.sock = sock
        self.websocket = websocket
        self.limit = limit
        self._frames = []
        self._sender = None
        self._error = None
        self._writer_waiting = False

    def write(self, frame):
        """The WebSocket's raw_write."""
        self._add(frame)
        if self._error is not None:
            raise OSError(*self._error.args)  # as a failed sendall would have
        if len(self._frames) >= self.limit:
            self._writer_waiting = True
            try:
                self._sender.join()
            finally:
                self._writer_waiting = False

    def send_now(self, frames):
        """Send whole frames from outside the WebSocket's writer, never waiting.

        False (nothing sent) when the socket is closed or failed, or the
        writer is waiting in the middle of its own frames, or too many queue.
        """
        if self.websocket.closed or self._error is not None or self._writer_waiting \
                or len(self._frames) >= self.limit:
            return False
        self._add(frames)
        return True

    def _add(self, data):
        if self._error is not None:
            return
        if self._sender is None and not self._frames:
            # Straight away, not in a new greenlet each time: at 500 clients
            # those greenlets pushed the garbage collector into 40-65 ms full
            # collections every second or two.
            data = self._send_without_waiting(data)
        if data:
            self._frames.append(data)
            if self._sender is None:
                self._sender = gevent.spawn(self._send)

    def _send_without_waiting(self, data):
        """What of ``data`` the socket did not take (b'' after a failure)."""
        try:
            sent = self.sock.send(data, 0, 0.0)  # gevent: timeout 0 raises, never waits
        except BlockingIOError:
            return data
        except OSError as exc:
            self._failed(exc)
            return b''
        return data[sent:]

    def _send(self):
        try:
            while self._frames:
                frames, self._frames = self._frames, []
                self.sock.sendall(b''.join(frames))
        except OSError as exc:
            self._failed(exc)
        finally:
            self._sender = None

    def _failed(self, exc):
        log.debug('WebSocket send failed: %s', exc)
        self._error, self._frames = exc, []

    def flush(self, timeout=5):
        """Wait up to ``timeout`` seconds for the queued frames to be sent."""
        sender = self._sender
        if sender is not None:
            sender.join(timeout)


###############################################################################
# Main ########################################################################
###############################################################################

class StampFormatter(logging.Formatter):
    """logging's Formatter with its time stamp's date and time made once a
    second, not for every line (half of a line's 16 us)."""

    _made = (None, '')  # (second, its date and time): one pair, so threads see a matching one

    def formatTime(self, record, datefmt=None):
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second, stamp = self._made
        if second != int(record.created):
            second = int(record.created)
            stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._made = second, stamp
        return self.default_msec_format % (stamp, record.msecs)


class JsonLogFormatter(StampFormatter):
    """One JSON object per line: time, level, logger, message, jobId."""

    def format(self, record):
        entry = {'time': self.formatTime(record), 'level': record.levelname,
                 'logger': record.name, 'message': record.getMessage()}
        if getattr(record, 'job_id', None):
            entry['jobId'] = record.job_id
        if record.exc_info:
            entry['exception'] = self.formatException(record.exc_info)
        return json.dumps(entry)


class RedactSecrets(logging.Filter):
    """Last line of defence: a secret setting's value never reaches the log."""

    def __init__(self, secrets):
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 6]

    def filter(self, record):
        text = record.getMessage()
        if any(secret in text for secret in self.secrets):
            for secret in self.secrets:
                text = text.replace(secret, '[redacted]')
            record.msg, record.args = text, None
        return True


def configure_logging(settings):
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == 'json':
        handler.setFormatter(JsonLogFormatter())
    else:
        # Under systemd, journald stamps each line itself.
        stamp = '' if os.environ.get('JOURNAL_STREAM') else '%(asctime)s '
        handler.setFormatter(StampFormatter(stamp + '%(levelname)s %(name)s: %(message)s'))
    handler.addFilter(RedactSecrets([getattr(settings, s.name.lower())
                                     for s in SETTINGS if s.secret]))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    logging.getLogger('apscheduler').setLevel(logging.WARNING)
    level = settings.log_level
    # One line per HTTP request is noise at INFO; LOG_LEVEL=DEBUG shows them.
    access = logging.DEBUG if level == 'DEBUG' else logging.WARNING
    logging.getLogger('geventwebsocket.handler').setLevel(access)


def start_scheduler(engine):
    """Cleanup, metrics broadcasts, health probes, following publishes and
    orders, each on its interval."""
    settings = engine.settings
    scheduler = GeventScheduler(timezone='UTC', job_defaults={
        'coalesce': True, 'max_instances': 1, 'misfire_grace_time': None})
    scheduler.add_job(lambda: engine.cleanup(settings.cleanup_max_age_ms), 'interval',
                      seconds=settings.cleanup_interval_ms / 1000, id='cleanup')
    if settings.enable_monitoring:
        scheduler.add_job(lambda: engine.events.emit(METRICS, engine.metrics()), 'interval',
                          seconds=settings.metrics_interval_ms / 1000, id='metrics')
        scheduler.add_job(engine.probe_services, 'interval', id='health',
                          seconds=settings.health_check_interval_ms / 1000)
    scheduler.add_job(engine.follower.poll, 'interval', id='publishing',
                      seconds=settings.printify_sync_poll_ms / 1000)
    scheduler.add_job(engine.follow_orders, 'interval', id='orders',
                      seconds=settings.order_poll_interval_ms / 1000)
    scheduler.start()
    return scheduler


def sd_notify(message):
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    address = os.environ.get('NOTIFY_SOCKET')
    if not address:
        return
    if address.startswith('@'):
        address = '\0' + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:  # systemd went away: nothing to tell, nothing to fail
        log.debug('sd_notify %s: %s', message, exc)


def url_host(host):
    return '127.0.0.1' if host in ('0.0.0.0', '::', '') else host


def start_watchdog():
    """Ping systemd's watchdog from the event loop: if the loop wedges, the
    pings stop and systemd restarts the service (WatchdogSec=)."""
    usec = os.environ.get('WATCHDOG_USEC')
    pid = os.environ.get('WATCHDOG_PID')
    if not usec or (pid and pid != str(os.getpid())):
        return None
    interval = int(usec) / 2e6

    def beat():
        while True:
            sd_notify('WATCHDOG=1')
            gevent.sleep(interval)
    return gevent.spawn(beat)


def serve(settings):
    """Run the engine until SIGTERM or SIGINT; returns the exit code."""
    check_binding(settings)
    # A full disk or file-size limit must fail a write (EFBIG), not kill us.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    engine = Engine(settings)
    engine.open()
    wsgi, sio, stream = create_wsgi(engine)
    server = gevent.pywsgi.WSGIServer(
        (settings.host, settings.port), wsgi, handler_class=Handler,
        log=logging.getLogger('podengine.access'), error_log=logging.getLogger('podengine.http'))
    server.start()
    engine.public_url = settings.public_url.rstrip('/') or \
        f'http://{url_host(settings.host)}:{server.server_port}'
    engine.start()
    if settings.public_url:
        gevent.spawn(engine.register_webhooks)
    scheduler = start_scheduler(engine)
    announce(engine, server.server_port)
    sd_notify('READY=1')
    watchdog = start_watchdog()
    wait_for_signal()
    sd_notify('STOPPING=1')
    log.info('stopping: new jobs get 503; running jobs have %d ms to finish',
             settings.shutdown_grace_ms)
    scheduler.shutdown(wait=False)
    engine.stop(settings.shutdown_grace_ms / 1000)  # the API keeps answering meanwhile
    stream.close_all()
    for sid in list(sio.manager.get_participants('/', None)):
        sio.disconnect(sid[0] if isinstance(sid, tuple) else sid)
    if watchdog is not None:
        watchdog.kill(block=False)
    server.stop(timeout=1)
    log.info('stopped')
    return 0


def announce(engine, port):
    settings = engine.settings
    log.info('POD Engine %s listening on http://%s:%d (image backend: %s; platforms: %s; '
             'prompt writer: %s; data: %s; API key: %s)', __version__, url_host(settings.host),
             port, engine.image_backend.describe(),
             ', '.join(p.describe() for p in engine.publishers),
             engine.prompt_writer.describe(),
             settings.data_path if settings.enable_persistence else 'memory only',
             'required' if settings.pod_api_key else 'not set')
    for publisher in engine.publishers:
        if publisher.facts():
            log.info('%s: %s', publisher.name, ', '.join(
                f'{key} {value}' for key, value in publisher.facts().items()))


def wait_for_signal():
    stop = gevent.event.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop.set)
    stop.wait()


def print_help():
    print('POD Engine %s: python podengine.py [--help | --env-example]\n' % __version__)
    print('Settings (environment variables or .env):')
    for setting in SETTINGS:
        print(f'  {setting.name:26} {setting.help} [default: {setting.default!r}]')


def main(argv=None):
    """Run the engine until SIGTERM; ``--help`` lists the settings."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ('-h', '--help'):
        print_help()
        return 0
    if argv and argv[0] == '--env-example':
        print(env_example())
        return 0
    try:
        settings = load_settings()
        configure_logging(settings)
        return serve(settings)
    except PodEngineError as exc:
        print(f'pod-engine: cannot start: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
