"""The small interfaces every backend of POD Engine implements.

Three kinds of adapter plug into the engine:

    ImageBackend.generate(spec, ctx)                 -> [ImageFile]
    PromptWriter.write(request, count, ctx)          -> [DesignBrief]
    Publisher.publish(artwork, product_type, brief, ctx) -> Product (a dict)
    Publisher.link(products, failures, ctx)          (after every platform)
    Publisher.publish_state(product)                 (for the follower)
    Publisher.final_mockups(product)                 (for the follower)

Each adapter is built once per engine as ``Cls(settings, http)`` (the engine's
requests.Session; the built-in ones that send requests cannot be built without
it, the local ones take none), has a
``name``, answers ``health()`` (called from a background probe, so it must use
short timeouts) and releases what it holds in ``close()``.

``ctx`` is the running job's handle (``podengine.JobContext``). Adapters use:
``ctx.job_id``, ``ctx.data_dir`` (a Path), ``ctx.job_dir`` (a Path under
DATA_DIR for this job's files), ``ctx.log(message, level)``,
``ctx.progress(percent)``, ``ctx.checkpoint(key, fn)``, ``ctx.cancelled``,
``ctx.file_url(path)`` and ``ctx.run_in_thread(fn, *args)`` for CPU-heavy work
(Pillow), which keeps the server answering while an image renders.

Errors: adapters raise ``AdapterError`` (or a subclass) and say whether trying
again later can help (``retryable``). Anything else an adapter raises is a bug
and fails the job without retry.
"""

import os
import tempfile
from dataclasses import asdict, dataclass, field, fields

__all__ = [
    'Adapter', 'AdapterError', 'Artwork', 'ConfigError', 'DesignBrief', 'ImageBackend',
    'ImageFile', 'ImageSpec', 'PodEngineError', 'ProductType', 'PromptWriter',
    'Publisher', 'Record', 'write_atomic',
]


###############################################################################
# Errors ######################################################################
###############################################################################

class PodEngineError(Exception):
    """Root of every error the engine and its adapters raise on purpose."""


class ConfigError(PodEngineError):
    """A setting, or a file it names, is wrong: the engine will not start."""


class AdapterError(PodEngineError):
    """A backend could not do its work.

    ``retryable`` says whether the same call may succeed later (a timeout, a
    5xx, a 429) or never will (a 4xx that describes the request itself).
    """

    def __init__(self, message, *, adapter=None, status=None, retryable=True):
        super().__init__(message)
        self.adapter = adapter
        self.status = status
        self.retryable = retryable


###############################################################################
# Records passed between the engine and adapters ##############################
###############################################################################

class Record:
    """A dataclass that travels through JSON checkpoints and job results."""

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class ImageSpec(Record):
    """What to draw: one prompt, ``count`` images, each with its own seed."""
    prompt: str
    negative_prompt: str = ''
    seed: int = 0
    width: int = 4500
    height: int = 5400
    count: int = 1
    filename_prefix: str = 'design'
    caption: str = ''  # words to set on the design; backends that draw no text ignore it


@dataclass
class ImageFile(Record):
    """One generated image. ``path`` is relative to DATA_DIR."""
    path: str
    width: int
    height: int
    seed: int
    prompt: str
    backend: str
    laid_out: bool = False  # drawn for the print area as a whole (not cut out and placed)


@dataclass
class DesignBrief(Record):
    """A design to make and sell: the image prompt and the listing copy."""
    image_prompt: str
    title: str
    description: str
    tags: list = field(default_factory=list)
    negative_prompt: str = ''
    description_html: str = ''
    writer: str = ''
    writer_reason: str = ''  # why the template wrote it when the LLM was asked
    caption: str = ''  # the design's own words, short (e.g. "Wild Fern")


@dataclass
class Artwork(Record):
    """A print-ready design file. ``key`` is unique and stable within a job,
    so publishers can derive idempotent upstream ids from it."""
    key: str
    path: str
    url: str
    width: int
    height: int


@dataclass
class ProductType(Record):
    """One entry of the product catalogue (``tshirt``, ``hoodie``, ...)."""
    key: str
    name: str
    price: float
    sizes: list = field(default_factory=list)
    colors: list = field(default_factory=list)
    print_width: int = 4500
    print_height: int = 5400
    placement: str = 'chest'   # where AI art goes in the print area: chest, center, full
    extra: dict = field(default_factory=dict)


###############################################################################
# Adapter interfaces ##########################################################
###############################################################################

class Adapter:
    """Base of every backend: a name, a health probe and ``close()``."""

    name = 'adapter'

    def __init__(self, settings, http=None):
        self.settings = settings
        self.http = http

    def health(self):
        """Return True when the backend can take work. Must return quickly."""
        return True

    def describe(self):
        """A short, secret-free description for start-up logs and /api/info."""
        return self.name

    def details(self):
        """Extra health detail for /health (JSON), or None. Read after health()."""
        return None

    def problems(self):
        """Secret-free sentences on why this backend cannot do its work as
        configured, for /health's ``reasons``. Read after health()."""
        return []

    def facts(self):
        """Secret-free facts learnt from the backend (e.g. a shop's sales
        channel) for /api/info and the start-up log, or None."""
        return None

    def upstream_stats(self):
        """``{status: count}`` of this adapter's upstream requests so far
        (``'error'``: no answer at all), for /metrics."""
        client = getattr(self, 'client', None)
        return dict(getattr(client, 'responses', {}))

    def rate_limit_waits(self):
        """``{limit name: (waits, seconds waited)}`` of its rate limiters."""
        client = getattr(self, 'client', None)
        return {name: (limiter.waits, limiter.waited)
                for name, limiter in getattr(client, 'limits', {}).items()}

    def close(self):
        """Release connections and files. Called once at shutdown."""


class ImageBackend(Adapter):
    """Turns a prompt into images on disk."""

    def generate(self, spec, ctx):
        """Draw ``spec.count`` images for ``spec``.

        :param spec: an ImageSpec
        :param ctx: the job context
        :return: a list of ImageFile, paths relative to DATA_DIR
        :raises AdapterError: when the images cannot be made
        """
        raise NotImplementedError


class PromptWriter(Adapter):
    """Turns a generate request into design briefs (prompt plus copy)."""

    def write(self, request, count, ctx):
        """Write ``count`` distinct briefs for ``request``.

        :param request: the validated generate request (a dict)
        :param count: how many designs to brief
        :param ctx: the job context
        :return: a list of ``count`` DesignBrief
        """
        raise NotImplementedError


class Publisher(Adapter):
    """Creates (and, when asked, publishes) one product on a platform."""

    def print_area(self, product_type, ctx):
        """The print file size ``(width, height)`` this platform wants for
        ``product_type``; the catalogue's size unless the platform knows better."""
        return product_type.print_width, product_type.print_height

    def publish(self, artwork, product_type, brief, ctx, auto_publish=True):
        """Create the product for ``artwork`` as ``product_type``.

        Must be idempotent for a given ``ctx.job_id`` and ``artwork.key``:
        called again after a crash, it returns the product it made before
        instead of making a second one.

        :return: ``{"platform", "productId", "url", "type", "status", ...}``
            with ``status`` one of ``draft``, ``publishing`` (a platform
            finishes it later: see ``publish_state``), ``published``; or
            None when this platform gets the product some other way
        :raises AdapterError: when the product cannot be made
        """
        raise NotImplementedError

    def link(self, products, failures, ctx):
        """Called once every platform has had its turn at one design and type,
        with the products they made (dicts this may update) and
        ``{platform: AdapterError}`` of those that failed: a publisher
        finishes what needed the others (Printify answers a publish with the
        storefront's product). Checkpoint any write, as in ``publish``."""

    def publish_state(self, product):
        """Where a ``publishing`` product (a result entry) stands now:
        ``('published', {fields to record})``, ``('publishing', None)`` or
        ``('publish_failed', reason)``. Called by the engine's follower."""
        return 'published', {}

    def final_mockups(self, product):
        """The fields to record of a product whose result says
        ``mockupsFinal: false`` (its mockups were still being rendered when it
        was made): ``{mockups, mockupUrl, mockupsFinal: True}``. Called by the
        follower ``mockup_wait_ms`` (an attribute, default 0) after the job."""
        return {'mockupsFinal': True}

    def republish(self, product):
        """Publish a ``publish_failed`` product again (a manual retry)."""
        raise AdapterError(f'{self.name} cannot publish a product again', retryable=False)

    def fulfilment_warnings(self, publishers):
        """Why orders for products made this way would not be fulfilled,
        given every configured publisher: start-up WARNINGs (list of text)."""
        return []


###############################################################################
# Files #######################################################################
###############################################################################

def write_atomic(path, write, adapter):
    """Write ``path`` through ``write(fileobj)`` via a temp file in the same
    directory and a rename, so nobody ever reads half a file.

    :raises AdapterError: (retryable) when the disk says no
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    except OSError as exc:
        raise AdapterError(f'cannot write {path}: {exc}', adapter=adapter) from exc
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these files are served
        os.replace(tmp, path)
    except BaseException as exc:
        _remove_quietly(tmp)
        if isinstance(exc, OSError):
            raise AdapterError(f'cannot write {path}: {exc}', adapter=adapter) from exc
        raise


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass  # the write already failed; that error is the one to report
