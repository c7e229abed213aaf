"""A plugin the tests load through CUSTOM_HANDLERS (the engine's public
extension point): handlers and backends whose behaviour a test steers through
files in DATA_DIR, and which leave traces there for the test to check.

Traces: DATA_DIR/trace/<name> files, one line per event.
Control: DATA_DIR/control/<name>.json, read on each call.
"""

import json
import time

import gevent

from adapters.base import AdapterError, Publisher
from adapters.local import LocalImageBackend, LocalPublisher


def trace(ctx_or_dir, name, line):
    folder = getattr(ctx_or_dir, 'data_dir', ctx_or_dir) / 'trace'
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, 'a') as file:
        file.write(f'{line}\n')


def control(data_dir, name, default):
    path = data_dir / 'control' / f'{name}.json'
    return json.loads(path.read_text()) if path.exists() else default


def attempts_so_far(ctx):
    path = ctx.data_dir / 'trace' / f'attempts-{ctx.job_id}'
    trace(ctx, f'attempts-{ctx.job_id}', time.time())
    return len(path.read_text().splitlines())


# Handlers --------------------------------------------------------------------

def sleep(request, ctx):
    """Sleep ``seconds``; trace start and finish (a killed attempt never finishes)."""
    trace(ctx, f'sleep-{ctx.job_id}', 'started')
    for step in range(10):
        gevent.sleep(request.get('seconds', 1) / 10)
        ctx.progress((step + 1) * 10)
    trace(ctx, f'sleep-{ctx.job_id}', 'finished')
    return {'slept': request.get('seconds', 1)}


def flaky(request, ctx):
    """Fail (retryably) on the first ``failTimes`` attempts, then succeed."""
    attempt = attempts_so_far(ctx)
    if attempt <= request.get('failTimes', 1):
        raise AdapterError(f'flaky failure on attempt {attempt}', retryable=True)
    return {'attempts': attempt}


def fail(request, ctx):
    attempts_so_far(ctx)
    raise AdapterError(request.get('message', 'it failed'),
                       retryable=request.get('retryable', False))


def steps(request, ctx):
    """Checkpointed steps; step ``failAt`` fails once, and ``sleepAt`` sleeps."""
    done = []
    for number in range(request.get('steps', 3)):
        def run(number=number):
            trace(ctx, f'steps-{ctx.job_id}', number)
            if number == request.get('sleepAt'):
                gevent.sleep(request.get('seconds', 30))
            failed_before = ctx.data_dir / 'trace' / f'failed-{ctx.job_id}'
            if number == request.get('failAt') and not failed_before.exists():
                trace(ctx, f'failed-{ctx.job_id}', number)
                raise AdapterError(f'step {number} failed', retryable=True)
            return number * 10
        done.append(ctx.checkpoint(f'step:{number}', run))
        ctx.progress(100 * (number + 1) / request.get('steps', 3))
    return {'steps': done}


def crash(request, ctx):
    return {}['missing']  # a bug: KeyError


HANDLERS = {'sleep': sleep, 'flaky': flaky, 'fail': fail, 'steps': steps, 'crash': crash}


# Backends --------------------------------------------------------------------

class SwitchPublisher(LocalPublisher):
    """The local publisher, except for what control/switch.json says:
    ``{"fail": ["hoodie"], "retryable": false, "healthy": true}``."""

    name = 'switch'

    def publish(self, artwork, product_type, brief, ctx, auto_publish=True):
        rules = control(ctx.data_dir, 'switch', {})
        trace(ctx, 'switch-calls', f'{ctx.job_id} {artwork.key} {product_type.key}')
        if product_type.key in rules.get('fail', []):
            raise AdapterError(f'switch refuses {product_type.key}',
                               retryable=rules.get('retryable', False))
        product = super().publish(artwork, product_type, brief, ctx, auto_publish)
        return {**product, 'platform': 'switch'}

    def health(self):
        from pathlib import Path
        return control(Path(self.settings.data_dir).resolve(), 'switch', {}).get('healthy', True)


class TracedImageBackend(LocalImageBackend):
    """The local generator, tracing each call (to prove nothing is redrawn)."""

    name = 'traced'

    def generate(self, spec, ctx):
        trace(ctx, 'image-calls', f'{ctx.job_id} {spec.filename_prefix}')
        return super().generate(spec, ctx)


class DownImageBackend(LocalImageBackend):
    name = 'down'

    def health(self):
        return False


PUBLISHERS = {'switch': SwitchPublisher}
IMAGE_BACKENDS = {'traced': TracedImageBackend, 'down': DownImageBackend}


class TinyImageBackend(LocalImageBackend):
    """Quick flat designs (size from control/tiny.json, default 1200x1440),
    for tests that make many designs and care about what happens after."""

    name = 'tiny'

    def generate(self, spec, ctx):
        from adapters.base import ImageFile
        width, height = control(ctx.data_dir, 'tiny', {}).get('size', [1200, 1440])
        ctx.job_dir.mkdir(parents=True, exist_ok=True)
        files = []
        for index in range(spec.count):
            seed = spec.seed + index
            path = ctx.job_dir / f'{spec.filename_prefix}_{index}.png'
            # In a thread, as a real backend's Pillow work is: on the hub, a
            # batch of these held /health for up to 2 s.
            ctx.run_in_thread(draw_tiny, path, width, height, seed)
            files.append(ImageFile(path=str(path.relative_to(ctx.data_dir)), width=width,
                                   height=height, seed=seed, prompt=spec.prompt,
                                   backend=self.name, laid_out=True))
        return files


IMAGE_BACKENDS['tiny'] = TinyImageBackend


def draw_tiny(path, width, height, seed):
    from PIL import Image, ImageDraw
    image = Image.new('RGBA', (width, height), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((100, 100, width - 100, height - 100),
                                  fill=(seed % 256, 90, 200, 255))
    image.save(path, dpi=(300, 300))


class SleepyImageBackend(TinyImageBackend):
    """Takes control/sleepy.json "image" seconds per image, like a GPU would,
    and traces when each drawing starts and ends."""

    name = 'sleepy'

    def generate(self, spec, ctx):
        trace(ctx, 'draw', f'start {time.time()}')
        gevent.sleep(control(ctx.data_dir, 'sleepy', {}).get('image', 0.3))
        trace(ctx, 'draw', f'end {time.time()}')
        return super().generate(spec, ctx)


class SleepyPublisher(Publisher):
    """Takes control/sleepy.json "publish" seconds per product; writes nothing."""

    name = 'sleepy'

    def publish(self, artwork, product_type, brief, ctx, auto_publish=True):
        trace(ctx, 'publish', f'start {time.time()} {artwork.key}')
        gevent.sleep(control(ctx.data_dir, 'sleepy', {}).get('publish', 0.3))
        return {'platform': 'sleepy', 'productId': f'{artwork.key}-{product_type.key}',
                'url': '', 'type': product_type.key}


IMAGE_BACKENDS['sleepy'] = SleepyImageBackend
PUBLISHERS['sleepy'] = SleepyPublisher
