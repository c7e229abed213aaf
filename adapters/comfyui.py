"""ComfyUI image backend: API-format workflows on one or more ComfyUI servers.

Built to the behaviour of a real, unmodified ComfyUI (0.3.x):

- ``POST /prompt {prompt, client_id}`` queues a workflow. A 400 carries
  ``node_errors``; a 200 can too, when some output branches were dropped.
- Events go only to the WebSocket whose ``clientId`` sent the prompt. Each
  server gets one socket per engine, shared by all jobs, and events are
  routed to the waiting job by ``prompt_id``. ``/history/{id}`` answers ``{}``
  until a prompt is done, so it is the fallback when the socket is down.
- Identical workflows are served from ComfyUI's cache, with the earlier
  job's file. Every image here has its own seed and a job-unique
  ``filename_prefix``, so that never happens.
- Cancel and timeout interrupt the prompt (``/interrupt`` when it runs,
  ``/queue {"delete"}`` while it waits), so the GPU stops too.

Workflows are templates: any string value exactly ``{{prompt}}``,
``{{negative_prompt}}``, ``{{seed}}``, ``{{width}}``, ``{{height}}``,
``{{steps}}``, ``{{cfg}}``, ``{{checkpoint}}`` or ``{{filename_prefix}}`` is
replaced (numbers as numbers).
"""

import collections
import copy
import io
import json
import logging
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import gevent
import gevent.queue
import requests
import websocket
from PIL import Image

from adapters.base import AdapterError, ConfigError, ImageBackend, ImageFile

log = logging.getLogger('podengine.comfyui')

DEFAULT_WORKFLOW = Path(__file__).resolve().parent / 'workflows' / 'sdxl_txt2img.json'
PLACEHOLDERS = {
    '{{prompt}}': str, '{{negative_prompt}}': str, '{{seed}}': int, '{{width}}': int,
    '{{height}}': int, '{{steps}}': int, '{{cfg}}': float, '{{checkpoint}}': str,
    '{{filename_prefix}}': str,
}
DONE_EVENTS = ('execution_success', 'execution_error', 'execution_interrupted')
POLL_SECONDS = 2.0
QUICK = 5  # seconds: probes, interrupts, queue reads


###############################################################################
# Workflow templates ##########################################################
###############################################################################

def load_workflow(path):
    """Read and check an API-format workflow ("Save (API)" in ComfyUI)."""
    path = Path(path) if path else DEFAULT_WORKFLOW
    try:
        workflow = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as exc:
        raise ConfigError(f'COMFYUI_WORKFLOW: cannot read {path}: {exc}') from None
    check_workflow(workflow, f'COMFYUI_WORKFLOW: {path}')
    return workflow


def check_workflow(workflow, where, need_prompt=True):
    """Raise ConfigError unless ``workflow`` is an API-format workflow with an
    output node (and a ``{{prompt}}`` placeholder when ``need_prompt``)."""
    if not isinstance(workflow, dict) or not workflow or not all(
            isinstance(node, dict) and 'class_type' in node for node in workflow.values()):
        raise ConfigError(f'{where} is not an API-format workflow (use "Save (API)" in '
                          f'ComfyUI: an object of nodes, each with a class_type)')
    if not output_nodes(workflow):
        raise ConfigError(f'{where} has no output node (SaveImage or PreviewImage)')
    if need_prompt and '{{prompt}}' not in placeholders_in(workflow):
        raise ConfigError(f'{where} has no "{{{{prompt}}}}" placeholder: mark the prompt '
                          f'text input with it')


def output_nodes(workflow):
    return [node_id for node_id, node in workflow.items() if is_output(node)]


def is_output(node):
    kind = str(node.get('class_type', '')).lower()
    return 'save' in kind or 'preview' in kind


def placeholders_in(workflow):
    found = set()
    for node in workflow.values():
        for value in (node.get('inputs') or {}).values():
            if isinstance(value, str) and value in PLACEHOLDERS:
                found.add(value)
    return found


def fill_workflow(workflow, values):
    """A copy of ``workflow`` with its placeholders replaced by ``values``.

    SaveImage nodes without a ``{{filename_prefix}}`` get the job's prefix
    anyway: a repeated prompt must not come back as an earlier job's file.
    """
    filled = copy.deepcopy(workflow)
    for node in filled.values():
        inputs = node.setdefault('inputs', {})
        for key, value in inputs.items():
            if isinstance(value, str) and value in PLACEHOLDERS:
                inputs[key] = PLACEHOLDERS[value](values[value.strip('{}')])
        if is_output(node) and 'filename_prefix' in inputs and \
                '{{filename_prefix}}' not in workflow_values(workflow):
            inputs['filename_prefix'] = values['filename_prefix']
    return filled


def workflow_values(workflow):
    return {value for node in workflow.values()
            for value in (node.get('inputs') or {}).values() if isinstance(value, str)}


###############################################################################
# Errors from ComfyUI, trimmed ################################################
###############################################################################

def describe_rejection(body):
    """One readable line for a 400 (or a 200 with node_errors) from /prompt."""
    body = body if isinstance(body, dict) else {}
    parts = []
    for node_id, node in (body.get('node_errors') or {}).items():
        for error in node.get('errors', [])[:3]:
            parts.append(f'node {node_id} ({node.get("class_type", "?")}): '
                         f'{error.get("message", "")}: {trim(error.get("details", ""), 200)}')
    error = body.get('error')
    if not parts and isinstance(error, dict):
        parts.append(f'{error.get("message", "invalid workflow")} '
                     f'{trim(error.get("details", ""), 200)}'.strip())
    return 'ComfyUI rejected the workflow: ' + ('; '.join(parts) or trim(str(body), 300))


def describe_failure(data):
    """One readable line for an execution_error or execution_interrupted."""
    where = f'node {data.get("node_id", "?")} ({data.get("node_type", "?")})'
    if 'exception_message' not in data:
        return f'ComfyUI interrupted the prompt at {where}'
    return (f'ComfyUI failed at {where}: {data.get("exception_type", "Error")}: '
            f'{trim(data.get("exception_message", ""), 300)}')


def trim(text, limit):
    text = ' '.join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + '…'


###############################################################################
# One ComfyUI server ##########################################################
###############################################################################

class ServerDown(AdapterError):
    """The server did not answer at all (not even with an error)."""


class ComfyServer:
    """One ComfyUI server: HTTP calls, its event socket, and its health."""

    def __init__(self, url, http, client_id):
        self.url = url.rstrip('/')
        self.http = http
        self.client_id = client_id
        self.up = True
        self.queue_remaining = 0
        self.in_flight = 0
        self.responses = collections.Counter()
        self._waiters = {}
        self._socket = None
        self._listener = None

    @property
    def label(self):
        parts = urlsplit(self.url)
        return f'{parts.hostname}:{parts.port or (443 if parts.scheme == "https" else 80)}'

    # HTTP ----------------------------------------------------------------------

    def call(self, method, path, timeout=QUICK, **kwargs):
        try:
            response = self.http.request(method, self.url + path, timeout=timeout, **kwargs)
            self.responses[str(response.status_code)] += 1
        except requests.RequestException as exc:
            self.responses['error'] += 1
            self.up = False
            raise ServerDown(f'ComfyUI at {self.label} is unreachable: '
                             f'{type(exc).__name__}', adapter='comfyui') from None
        if response.status_code >= 500:
            raise AdapterError(f'ComfyUI at {self.label} answered {response.status_code}',
                               adapter='comfyui', status=response.status_code)
        return response

    def probe(self):
        """True when /system_stats answers; also refreshes the queue length."""
        try:
            self.call('GET', '/system_stats', timeout=3).raise_for_status()
            self.queue_remaining = self.read_queue_remaining()
            self.up = True
        except (AdapterError, requests.RequestException, ValueError):
            self.up = False
        return self.up

    def read_queue_remaining(self):
        response = self.call('GET', '/prompt', timeout=3)
        return int(response.json()['exec_info']['queue_remaining'])

    def submit(self, workflow, prompt_id):
        response = self.call('POST', '/prompt', timeout=30, json={
            'prompt': workflow, 'client_id': self.client_id, 'prompt_id': prompt_id})
        body = json_or_none(response)
        if response.status_code >= 400:
            raise AdapterError(describe_rejection(body), adapter='comfyui',
                               status=response.status_code, retryable=False)
        if not body or 'prompt_id' not in body:
            raise AdapterError(f'ComfyUI at {self.label} sent no prompt_id', adapter='comfyui')
        if body.get('node_errors'):
            self.stop(body['prompt_id'])
            raise AdapterError(describe_rejection(body), adapter='comfyui', retryable=False)
        return body['prompt_id']

    def history(self, prompt_id):
        return json_or_none(self.call('GET', f'/history/{prompt_id}')) or {}

    def knows(self, prompt_id):
        return bool(self.history(prompt_id)) or self.is_queued(prompt_id)

    def is_queued(self, prompt_id):
        body = json_or_none(self.call('GET', '/queue')) or {}
        items = body.get('queue_running', []) + body.get('queue_pending', [])
        return any(len(item) > 1 and item[1] == prompt_id for item in items)

    def stop(self, prompt_id):
        """Take the prompt off the GPU: drop it if queued, interrupt it if running."""
        for path, body in (('/queue', {'delete': [prompt_id]}),
                           ('/interrupt', {'prompt_id': prompt_id})):
            try:
                self.call('POST', path, json=body)
            except AdapterError as exc:
                log.warning('could not stop prompt %s: %s', prompt_id, exc)

    def upload(self, name, data):
        """Put ``data`` (a PNG) in the server's input folder as ``name``
        (overwritten: sending it again after a failure is harmless)."""
        response = self.call('POST', '/upload/image', timeout=60,
                             files={'image': (name, data, 'image/png')},
                             data={'type': 'input', 'overwrite': 'true'})
        if response.status_code != 200:
            raise AdapterError(f'ComfyUI at {self.label} refused the upload of {name} '
                               f'({response.status_code})', adapter='comfyui',
                               status=response.status_code, retryable=False)

    def download(self, image):
        params = {'filename': image['filename'], 'subfolder': image.get('subfolder', ''),
                  'type': image.get('type', 'output')}
        response = self.call('GET', '/view', timeout=60, params=params)
        if response.status_code != 200:
            raise AdapterError(f'ComfyUI /view of {image["filename"]} answered '
                               f'{response.status_code}', adapter='comfyui')
        return response.content

    # Events --------------------------------------------------------------------

    def subscribe(self, prompt_id):
        """A queue that receives this prompt's WebSocket events."""
        self._ensure_listener()
        waiter = gevent.queue.Queue()
        self._waiters[prompt_id] = waiter
        return waiter

    def unsubscribe(self, prompt_id):
        self._waiters.pop(prompt_id, None)

    def _ensure_listener(self):
        if self._listener is None or self._listener.dead:
            self._listener = gevent.spawn(self._listen)

    def _listen(self):
        """Keep one socket open while anyone waits; reconnect with backoff."""
        delay = 0.5
        while self._waiters:
            try:
                # Text frames are decoded as UTF-8 anyway; the library's own
                # check first is pure Python and cost 0.45 s per 60 images.
                self._socket = websocket.create_connection(self.ws_url(), timeout=30,
                                                           skip_utf8_validation=True)
                delay = 0.5
                self._pump(self._socket)
            except Exception as exc:  # any socket failure: the pollers carry on
                log.debug('ComfyUI socket at %s: %s', self.label, exc)
            finally:
                self._close_socket()
            gevent.sleep(delay)
            delay = min(delay * 2, 10)

    def _pump(self, sock):
        while self._waiters:
            try:
                text = sock.recv()
            except websocket.WebSocketTimeoutException:
                continue
            if not text:
                return
            if isinstance(text, str):
                self._route(json.loads(text))

    def _route(self, message):
        data = message.get('data') or {}
        waiter = self._waiters.get(data.get('prompt_id'))
        if waiter is not None:
            waiter.put((message.get('type'), data))

    def _close_socket(self):
        if self._socket is not None:
            try:
                self._socket.close()
            except Exception:
                pass  # closing a broken socket can fail; it is gone either way
            self._socket = None

    def ws_url(self):
        scheme = 'wss' if self.url.startswith('https') else 'ws'
        return f'{scheme}{self.url[self.url.index(":"):]}/ws?clientId={self.client_id}'

    def close(self):
        self._waiters.clear()
        self._close_socket()
        if self._listener is not None:
            self._listener.kill(block=False)


def json_or_none(response):
    try:
        return response.json()
    except ValueError:
        return None


###############################################################################
# The backend #################################################################
###############################################################################

class ComfyUIBackend(ImageBackend):
    """Runs the configured workflow on the least busy ComfyUI server."""

    name = 'comfyui'

    def __init__(self, settings, http):
        if http is None:
            raise TypeError('ComfyUIBackend needs an HTTP session')
        super().__init__(settings, http)
        if not settings.comfyui_url:
            raise ConfigError('IMAGE_BACKEND=comfyui needs COMFYUI_URL')
        self.workflow = load_workflow(settings.comfyui_workflow)
        client_id = f'pod-engine-{uuid.uuid4().hex[:12]}'
        self.servers = [ComfyServer(url, self.http, client_id) for url in settings.comfyui_url]
        self.timeout = settings.comfyui_timeout_ms / 1000
        if not {'{{seed}}', '{{filename_prefix}}'} & placeholders_in(self.workflow):
            log.warning('the workflow has no {{seed}} or {{filename_prefix}} placeholder; '
                        'the engine sets SaveImage filename_prefix itself')

    def describe(self):
        count = len(self.servers)
        return f'comfyui ({count} server{"s" if count > 1 else ""})'

    def health(self):
        probes = [gevent.spawn(server.probe) for server in self.servers]
        gevent.joinall(probes, timeout=QUICK)
        return any(probe.value for probe in probes if probe.successful())

    def details(self):
        return [{'server': server.label, 'up': server.up,
                 'queueRemaining': server.queue_remaining} for server in self.servers]

    def close(self):
        for server in self.servers:
            server.close()

    def upstream_stats(self):
        total = collections.Counter()
        for server in self.servers:
            total.update(server.responses)
        return dict(total)

    # Generating ----------------------------------------------------------------

    def generate(self, spec, ctx):
        files = []
        for index in range(spec.count):
            share = ctx.scoped('', (100 * index / spec.count, 100 * (index + 1) / spec.count))
            values = self.values_for(spec, spec.seed + index, ctx)
            key = f'comfyui:{spec.filename_prefix}:{index}'
            image = self.run_workflow(fill_workflow(self.workflow, values), key, share)[0]
            target = ctx.job_dir / f'{spec.filename_prefix}_{index}.png'
            files.append(self.save(image, target, spec.prompt, spec.seed + index, ctx))
        return files

    def values_for(self, spec, seed, ctx):
        settings = self.settings
        return {'prompt': spec.prompt, 'negative_prompt': spec.negative_prompt, 'seed': seed,
                'width': settings.comfyui_width, 'height': settings.comfyui_height,
                'steps': settings.comfyui_steps, 'cfg': settings.comfyui_cfg,
                'checkpoint': settings.comfyui_checkpoint,
                'filename_prefix': f'pod/{ctx.job_id}/{spec.filename_prefix}_{seed}'}

    def upscale(self, path, model, prefix, ctx):
        """The image at ``path`` (under DATA_DIR) enlarged on ComfyUI by the
        upscale model ``model`` (COMFYUI_UPSCALE_MODEL), saved in the job's
        folder as ``<prefix>.png``. :return: ImageFile"""
        name = f'pod-{ctx.job_id}-{prefix}.png'
        data = (ctx.data_dir / path).read_bytes()
        workflow = upscale_workflow(name, model, f'pod/{ctx.job_id}/{prefix}')
        ctx.log(f'ComfyUI: upscaling {path.rsplit("/", 1)[-1]} with {model}')
        image = self.run_workflow(workflow, f'comfyui:{prefix}', ctx,
                                  before=lambda server: server.upload(name, data))[0]
        return self.save(image, ctx.job_dir / f'{prefix}.png', '', 0, ctx)

    def run_workflow(self, workflow, key, ctx, before=None):
        """Run a filled ``workflow`` to the end; its output images as
        ``(bytes, info)`` pairs.

        The server and prompt id are chosen and checkpointed before the
        prompt is sent, so an engine restarted mid-run finds the same prompt
        on the same server instead of queueing the work twice. A server that
        goes down hands the prompt to the next one.
        """
        tried = set()
        while True:
            placed = ctx.checkpoint(key, lambda: self.choose(tried))
            server = self.server_at(placed['server'])
            try:
                if before is not None:  # e.g. the upload the workflow loads
                    before(server)
                return self.run_on(server, placed['promptId'], workflow, ctx)
            except ServerDown:
                tried.add(server.url)
                ctx.forget(key)
                if len(tried) >= len(self.servers):
                    raise
                ctx.log(f'ComfyUI {server.label} is down; trying another server', 'WARNING')

    def choose(self, tried):
        """The least busy server not tried yet, and a fresh prompt id."""
        candidates = [server for server in self.by_load() if server.url not in tried]
        if not candidates:
            raise ServerDown('no ComfyUI server is reachable', adapter='comfyui')
        return {'server': candidates[0].url, 'promptId': str(uuid.uuid4())}

    def by_load(self):
        """Servers, least queue first; ones that do not answer last."""
        def refresh(server):
            try:
                server.queue_remaining = server.read_queue_remaining()
                server.up = True
            except (AdapterError, ValueError, KeyError, TypeError):
                server.up = False
        gevent.joinall([gevent.spawn(refresh, server) for server in self.servers],
                       timeout=QUICK)
        return sorted(self.servers, key=lambda s: (not s.up, s.queue_remaining + s.in_flight))

    def server_at(self, url):
        for server in self.servers:
            if server.url == url.rstrip('/'):
                return server
        raise AdapterError(f'the ComfyUI server of this prompt ({url}) is no longer '
                           f'configured', adapter='comfyui', retryable=False)

    def run_on(self, server, prompt_id, workflow, ctx):
        events = server.subscribe(prompt_id)
        server.in_flight += 1
        finished = False
        try:
            entry = None
            for _ in range(2):  # a second time only if the server lost the prompt
                if not server.knows(prompt_id):
                    server.submit(workflow, prompt_id)
                    ctx.log(f'ComfyUI {server.label}: queued prompt {prompt_id}')
                entry = self.wait(server, prompt_id, events, ctx)
                if entry is not None:
                    break
            finished = True
            if entry is None:
                raise AdapterError(f'ComfyUI {server.label} keeps losing prompt {prompt_id}',
                                   adapter='comfyui')
            return [(server.download(image), image) for image in images_of(check_entry(entry))]
        finally:
            server.unsubscribe(prompt_id)
            server.in_flight -= 1
            if not finished:  # cancelled, timed out or failed: free the GPU
                server.stop(prompt_id)

    def wait(self, server, prompt_id, events, ctx):
        """The prompt's history entry once it ends, or None when the server
        no longer has it; sampler progress on the way."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                kind, data = events.get(timeout=POLL_SECONDS)
            except gevent.queue.Empty:
                kind, data = None, {}
            if kind == 'progress' and data.get('max'):
                ctx.progress(100 * data['value'] / data['max'])
            if kind in DONE_EVENTS or kind is None or \
                    (kind == 'executing' and data.get('node') is None):
                entry = server.history(prompt_id).get(prompt_id)
                if entry is not None:
                    return entry
                if kind is None and not server.is_queued(prompt_id):
                    return None
        raise AdapterError(f'ComfyUI did not finish prompt {prompt_id} within '
                           f'{self.timeout:.0f}s', adapter='comfyui')

    # Files ---------------------------------------------------------------------

    def save(self, image, target, prompt, seed, ctx):
        """Write the image as a PNG under the job's folder, without the
        workflow ComfyUI embeds in its PNGs (it holds the whole prompt)."""
        data, info = image
        target.parent.mkdir(parents=True, exist_ok=True)
        width, height = ctx.run_in_thread(reencode_png, data, target)
        ctx.log(f'ComfyUI: saved {info["filename"]} ({width}x{height})')
        return ImageFile(path=target.relative_to(ctx.data_dir).as_posix(), width=width,
                         height=height, seed=seed, prompt=prompt, backend=self.name)


def upscale_workflow(image_name, model, filename_prefix):
    """LoadImage -> UpscaleModelLoader + ImageUpscaleWithModel -> SaveImage."""
    return {
        '1': {'class_type': 'LoadImage', 'inputs': {'image': image_name}},
        '2': {'class_type': 'UpscaleModelLoader', 'inputs': {'model_name': model}},
        '3': {'class_type': 'ImageUpscaleWithModel',
              'inputs': {'upscale_model': ['2', 0], 'image': ['1', 0]}},
        '4': {'class_type': 'SaveImage',
              'inputs': {'images': ['3', 0], 'filename_prefix': filename_prefix}},
    }


def check_entry(entry):
    """The history entry of a finished prompt, or the reason it failed."""
    status = entry.get('status') or {}
    if status.get('status_str') == 'success' or status.get('completed'):
        if not images_of(entry):
            raise AdapterError('ComfyUI finished but the workflow produced no image',
                               adapter='comfyui', retryable=False)
        return entry
    for kind, data in reversed(status.get('messages') or []):
        if kind == 'execution_error':
            raise AdapterError(describe_failure(data), adapter='comfyui', retryable=False)
        if kind == 'execution_interrupted':
            raise AdapterError(describe_failure(data), adapter='comfyui')
    raise AdapterError('ComfyUI ended the prompt without a result', adapter='comfyui')


def images_of(entry):
    """Saved images first; preview (temp) images only if nothing was saved."""
    images = [image for output in (entry.get('outputs') or {}).values()
              for image in output.get('images', [])]
    return [image for image in images if image.get('type') == 'output'] or images


def reencode_png(data, target):
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            clean = image.convert('RGBA') if image.mode not in ('RGB', 'RGBA') else image.copy()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise AdapterError(f'ComfyUI sent an unreadable image: {exc}', adapter='comfyui',
                           retryable=False) from None
    temp = target.with_name(f'.{target.name}.tmp')
    clean.save(temp, 'PNG', compress_level=3)
    temp.replace(target)
    return clean.size
