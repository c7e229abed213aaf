"""Fake ComfyUI 0.3.64, built to the shapes captured from a real server.

The captured behaviour is in /work/shared/research/comfyui-api.md; this fake
reproduces it, pitfalls included: every route also lives under ``/api``;
``POST /prompt`` validates like ``execution.validate_prompt`` (same 400
bodies, partial acceptance, over-reported ``dependent_outputs``); one worker
greenlet runs the queue in order, in the executor's node order, with
per-node caching (an identical resubmit re-runs nothing and points at the old
file), sampler progress, runtime errors and interrupts; WebSocket events go
only to the prompt's ``client_id`` (``status`` to everyone); outputs are real
PNGs served by ``/view``. No model runs: a sampled image is one colour drawn
from the seed, and EmptyImage/ImageBlend/ImageInvert compute their colours as
ComfyUI does (the minimal workflow's pixel is (127, 255, 127)).

Scenario knobs, merged by ``POST /_fake/config``:

    step_seconds               seconds per KSampler step (0.02)
    node_seconds               seconds per other executed node (0)
    checkpoints                what /models/checkpoints lists and ckpt_name accepts
    fail_node_class            class_type that raises when it runs (execution_error)
    fail_exception_type        its exception_type ("RuntimeError")
    fail_message               its message (a CPU allocation failure)
    runtime_error_checkpoints  ckpt names accepted by validation whose loading
                               fails at run time (ValueError, corrupt file)
    down                       every route but /_fake answers 503 text/plain
    ws_disabled                /ws answers 404, so clients must poll /history
    ws_drop_after_events       close each socket once N messages went to it
                               (the initial status counts)
    queue_delay_seconds        a prompt stays pending this long after its POST
    image_size                 N or [width, height]: size of every PNG written
    system_stats_delay         seconds before /system_stats answers
    picture                    flat (one colour) or subject (a disc of the sampled
                               colour on a plain white background, antialiased)
    upscale_models             what /models/upscale_models lists and
                               UpscaleModelLoader accepts; a model's scale is
                               read from its name (RealESRGAN_x2.pth: 2,
                               4x-UltraSharp.pth: 4), and ImageUpscaleWithModel
                               enlarges the real pixels of a loaded image by it
    extra_node_classes         {class_type: {"required": {name: TYPE} or [names],
                               "outputs": [TYPE, ...], "output_node": bool}},
                               pass-through nodes accepted besides the built-ins

Control routes: ``POST /_fake/config``, ``GET /_fake/requests`` (every other
request: method, path, query, json, headers), ``GET /_fake/state`` (ids in
the queue, history, interrupted and deleted, and the files written) and
``POST /_fake/reset`` (default scenario; queue, history, cache, files and the
request log are forgotten; connected sockets stay).
"""

import copy
import hashlib
import heapq
import json
import posixpath
import random
import re
import socket
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from email.utils import formatdate
from io import BytesIO
from typing import Callable, NamedTuple

import bottle
import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

__all__ = ['create_app']

###############################################################################
# Constants ###################################################################
###############################################################################

DEFAULT_CHECKPOINTS = ('sd_xl_base_1.0.safetensors', 'pod-random-sd15.safetensors')
ALLOC_MESSAGE = ('[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can\'t '
                 'allocate memory: you tried to allocate {} bytes. Error code 12 (Cannot '
                 'allocate memory)')

DEFAULT_SCENARIO = {
    'step_seconds': 0.02,
    'node_seconds': 0.0,
    'checkpoints': list(DEFAULT_CHECKPOINTS),
    'fail_node_class': None,
    'fail_exception_type': 'RuntimeError',
    'fail_message': ALLOC_MESSAGE.format(4398046511104),
    'runtime_error_checkpoints': [],
    'down': False,
    'ws_disabled': False,
    'ws_drop_after_events': None,
    'queue_delay_seconds': 0.0,
    'image_size': None,
    'system_stats_delay': 0.0,
    'extra_node_classes': {},
    'picture': 'flat',
    'upscale_models': ['RealESRGAN_x2.pth', '4x-UltraSharp.pth'],
}

RAM_TOTAL, RAM_FREE = 25276502016, 23986216960
SYSTEM_STATS = {
    'system': {'os': 'posix', 'ram_total': RAM_TOTAL, 'ram_free': RAM_FREE,
               'comfyui_version': '0.3.64', 'required_frontend_version': '1.27.10',
               'installed_templates_version': '0.1.95', 'required_templates_version': '0.1.95',
               'python_version': sys.version, 'pytorch_version': '2.14.1+cu130',
               'embedded_python': False,
               'argv': ['main.py', '--cpu', '--listen', '127.0.0.1', '--port', '8188']},
    'devices': [{'name': 'cpu', 'type': 'cpu', 'index': None, 'vram_total': RAM_TOTAL,
                 'vram_free': RAM_FREE, 'torch_vram_total': RAM_TOTAL,
                 'torch_vram_free': RAM_FREE}],
}
FEATURES = {'supports_preview_metadata': True, 'max_upload_size': 104857600}
MODEL_FOLDERS = ['checkpoints', 'configs', 'loras', 'vae', 'text_encoders', 'diffusion_models',
                 'clip_vision', 'style_models', 'embeddings', 'diffusers', 'vae_approx',
                 'controlnet', 'gligen', 'upscale_models', 'hypernetworks', 'photomaker',
                 'classifiers', 'model_patches', 'audio_encoders']
SAMPLERS = ['euler', 'euler_cfg_pp', 'euler_ancestral', 'euler_ancestral_cfg_pp', 'heun',
            'heunpp2', 'dpm_2', 'dpm_2_ancestral', 'lms', 'dpm_fast', 'dpm_adaptive',
            'dpmpp_2s_ancestral', 'dpmpp_2s_ancestral_cfg_pp', 'dpmpp_sde', 'dpmpp_sde_gpu',
            'dpmpp_2m', 'dpmpp_2m_cfg_pp', 'dpmpp_2m_sde', 'dpmpp_2m_sde_gpu',
            'dpmpp_2m_sde_heun', 'dpmpp_2m_sde_heun_gpu', 'dpmpp_3m_sde', 'dpmpp_3m_sde_gpu',
            'ddpm', 'lcm', 'ipndm', 'ipndm_v', 'deis', 'res_multistep', 'res_multistep_cfg_pp',
            'res_multistep_ancestral', 'res_multistep_ancestral_cfg_pp', 'gradient_estimation',
            'gradient_estimation_cfg_pp', 'er_sde', 'seeds_2', 'seeds_3', 'sa_solver',
            'sa_solver_pece', 'ddim', 'uni_pc', 'uni_pc_bh2']
SCHEDULERS = ['simple', 'sgm_uniform', 'karras', 'exponential', 'ddim_uniform', 'beta', 'normal',
              'linear_quadratic', 'kl_optimal']
BLEND_MODES = ['normal', 'multiply', 'screen', 'overlay', 'soft_light', 'difference']
SENSITIVE_EXTRA_DATA_KEYS = ('auth_token_comfy_org', 'api_key_comfy_org')
OUTPUT_DIR = '/ComfyUI/output'
FILE_TYPES = ('output', 'input', 'temp')
MAXIMUM_HISTORY_SIZE = 10000
SERVER_ERROR = '500 Internal Server Error\n\nServer got itself in trouble'
HIDDEN = {'prompt': 'PROMPT', 'extra_pnginfo': 'EXTRA_PNGINFO'}
CONVERTERS = {'INT': int, 'FLOAT': float, 'STRING': str, 'BOOLEAN': bool}

# A ComfyUI traceback as format_tb gives it (execution_error.traceback).
TRACEBACK = [
    '  File "/ComfyUI/execution.py", line 496, in execute\n    output_data, output_ui, '
    'has_subgraph, has_pending_tasks = await get_output_data(prompt_id, unique_id, obj, '
    'input_data_all, execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, '
    'hidden_inputs=hidden_inputs)\n',
    '  File "/ComfyUI/execution.py", line 315, in get_output_data\n    return_values = await '
    '_async_map_node_over_list(prompt_id, unique_id, obj, input_data_all, obj.FUNCTION, '
    'allow_interrupt=True, execution_block_cb=execution_block_cb, '
    'pre_execute_cb=pre_execute_cb, hidden_inputs=hidden_inputs)\n',
    '  File "/ComfyUI/execution.py", line 289, in _async_map_node_over_list\n    await '
    'process_inputs(input_dict, i)\n',
    '  File "/ComfyUI/execution.py", line 277, in process_inputs\n    result = f(**inputs)\n',
    '  File "/ComfyUI/nodes.py", line {line}, in {function}\n    {statement}\n',
    '  File "/ComfyUI/venv/lib/python3.11/site-packages/torch/utils/_contextlib.py", line 120, '
    'in decorate_context\n    return func(*args, **kwargs)\n',
]

###############################################################################
# Exceptions ##################################################################
###############################################################################


class FakeComfyError(Exception):
    """Root of the fake's own exceptions."""


class NodeFailure(FakeComfyError):
    """A node failed at run time: becomes an ``execution_error``."""

    def __init__(self, exception_type, message):
        super().__init__(message)
        self.exception_type = exception_type


class Interrupted(FakeComfyError):
    """ComfyUI's InterruptProcessingException: becomes ``execution_interrupted``."""

###############################################################################
# Values flowing between nodes ################################################
###############################################################################


def tensor_repr(shape, value):
    """A torch-style summarised tensor repr; ``value(index)`` gives each element."""
    def edge(size):
        return list(range(size)) if size <= 6 else [0, 1, 2, None, size - 3, size - 2, size - 1]

    def render(dims, index, indent):
        if len(dims) == 1:
            cells = ['...' if i is None else f'{value(index + (i,)):.4f}' for i in edge(dims[0])]
            return '[' + ', '.join(cells) + ']'
        rows = ['...' if i is None else render(dims[1:], index + (i,), indent + 1)
                for i in edge(dims[0])]
        return '[' + (',' + '\n' * (len(dims) - 1) + ' ' * indent).join(rows) + ']'
    return 'tensor(' + render(tuple(shape), (), 8) + ')'


def object_repr(qualified_name, value):
    return f'<{qualified_name} object at 0x7f{id(value) & 0xffffffffff:010x}>'


@dataclass(frozen=True)
class Picture:
    """An IMAGE: ``colours`` holds one (r, g, b) in 0..1 per batch image;
    ``pixels``, when the image came from a file (LoadImage), one RGB PIL image
    per batch image, which SaveImage then writes as they are."""
    width: int
    height: int
    colours: tuple
    pixels: tuple = ()

    def __str__(self):
        shape = (len(self.colours), self.height, self.width, 3)
        return tensor_repr(shape, lambda i: self.colours[i[0]][i[3]])


@dataclass(frozen=True)
class Latent:
    """A LATENT: empty until a sampler gives it colours."""
    width: int
    height: int
    batch: int
    colours: tuple = ()

    def __str__(self):
        shape = (self.batch, 4, self.height // 8, self.width // 8)
        fill = (lambda i: self.colours[i[0]][i[1] % 3] * 2 - 1) if self.colours else (lambda i: 0)
        return "{'samples': " + tensor_repr(shape, fill) + '}'


@dataclass(frozen=True)
class Loaded:
    """A MODEL, CLIP or VAE loaded from ``ckpt``."""
    kind: str
    ckpt: str

    def __str__(self):
        names = {'MODEL': 'comfy.model_patcher.ModelPatcher', 'CLIP': 'comfy.sd.CLIP',
                 'VAE': 'comfy.sd.VAE'}
        return object_repr(names[self.kind], self)


@dataclass(frozen=True)
class UpscaleModel:
    """An UPSCALE_MODEL: a spandrel ImageModelDescriptor of ``scale``."""
    name: str
    scale: int

    def __str__(self):
        return object_repr('spandrel.__helpers.model_descriptor.ImageModelDescriptor', self)


@dataclass(frozen=True)
class Conditioning:
    """A CONDITIONING from CLIPTextEncode."""
    text: str

    def __str__(self):
        seed = int(hashlib.sha1(self.text.encode()).hexdigest()[:8], 16)
        cond = tensor_repr((1, 77, 2048), lambda i: ((seed >> (i[2] % 24)) % 2000) / 1000 - 1)
        pooled = tensor_repr((1, 1280), lambda i: ((seed >> (i[1] % 24)) % 1000) / 1000)
        return f"[[{cond}, {{'pooled_output': {pooled}}}]]"


def colour_from_int(color):
    return tuple(((color >> shift) & 0xFF) / 0xFF for shift in (16, 8, 0))


def colours_from_key(key, batch):
    """One colour per batch image, fixed by ``key`` (seed and sampler inputs)."""
    return tuple(tuple(random.Random(f'{key}|{i}').random() for _ in range(3))
                 for i in range(batch))


def blend_channel(a, b, mode):
    """ComfyUI's ImageBlend.blend_mode for one channel value."""
    if mode == 'normal':
        return b
    if mode == 'multiply':
        return a * b
    if mode == 'screen':
        return 1 - (1 - a) * (1 - b)
    if mode == 'overlay':
        return 2 * a * b if a <= 0.5 else 1 - 2 * (1 - a) * (1 - b)
    if mode == 'soft_light':
        g = ((16 * a - 12) * a + 4) * a if a <= 0.25 else a ** 0.5
        return a - (1 - 2 * b) * a * (1 - a) if b <= 0.5 else a + (2 * b - 1) * (g - a)
    if mode == 'difference':
        return a - b
    raise NodeFailure('ValueError', f'Unsupported blend mode: {mode}')


def format_value(value):
    """execution.format_value: scalars as they are, everything else as str()."""
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return str(value)

###############################################################################
# Node classes ################################################################
###############################################################################


class NodeClass(NamedTuple):
    """One node class: its /object_info inputs, outputs and what running it does."""
    name: str
    display_name: str
    category: str
    required: dict
    return_types: tuple
    run: Callable
    output_node: bool = False
    hidden: dict = None
    module: str = 'nodes'
    v3: bool = False
    validate: Callable = None    # VALIDATE_INPUTS(files, **inputs): True or a message
    is_changed: Callable = None  # IS_CHANGED(files, **inputs): part of the cache key


def run_checkpoint_loader(ctx, ckpt_name, **_):
    if ckpt_name in ctx.scenario['runtime_error_checkpoints']:
        raise NodeFailure('ValueError', (
            'Error while deserializing header: HeaderTooLarge\n\nFile path: '
            f'/ComfyUI/models/checkpoints/{ckpt_name}\n\nThe safetensors file is corrupt or '
            'invalid. Make sure this is actually a safetensors file and not a ckpt or pt or '
            'other filetype.'))
    return tuple(Loaded(kind, ckpt_name) for kind in ('MODEL', 'CLIP', 'VAE')), None


def run_clip_text_encode(ctx, text, **_):
    return (Conditioning(text),), None


def run_empty_latent(ctx, width, height, batch_size, **_):
    return (Latent(width, height, batch_size),), None


def run_ksampler(ctx, model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                 latent_image, denoise, **_):
    for step in range(1, steps + 1):
        ctx.sampler_step(step, steps)
    key = '|'.join(map(str, (seed, model.ckpt, positive.text, negative.text, cfg, sampler_name,
                             scheduler, steps, denoise)))
    latent = Latent(latent_image.width, latent_image.height, latent_image.batch,
                    colours_from_key(key, latent_image.batch))
    return (latent,), None


def run_vae_decode(ctx, samples, vae, **_):
    colours = samples.colours or ((0.5, 0.5, 0.5),) * samples.batch
    return (Picture(samples.width // 8 * 8, samples.height // 8 * 8, colours),), None


def run_empty_image(ctx, width, height, batch_size, color, **_):
    size = width * height * batch_size * 4
    if size > RAM_FREE:
        raise NodeFailure('RuntimeError', ALLOC_MESSAGE.format(size))
    return (Picture(width, height, (colour_from_int(color),) * batch_size),), None


def run_image_blend(ctx, image1, image2, blend_factor, blend_mode, **_):
    def mix(a, b):
        value = a * (1 - blend_factor) + blend_channel(a, b, blend_mode) * blend_factor
        return min(1.0, max(0.0, value))
    colours = tuple(tuple(mix(a, b) for a, b in zip(c1, image2.colours[i % len(image2.colours)]))
                    for i, c1 in enumerate(image1.colours))
    return (Picture(image1.width, image1.height, colours),), None


def run_image_invert(ctx, image, **_):
    colours = tuple(tuple(1 - v for v in colour) for colour in image.colours)
    return (Picture(image.width, image.height, colours),), None


def run_image_blur(ctx, image, **_):
    return (image,), None  # A blurred solid colour is the same colour.


def run_save_image(ctx, images, filename_prefix='ComfyUI', **_):
    return (), {'images': ctx.save(images, filename_prefix, 'output')}


def run_load_image(ctx, image, **_):
    entry = ctx.run.comfy.files.get('input', *split_annotated(image))
    try:
        loaded = Image.open(BytesIO(entry.data))
        loaded.load()
    except Exception:  # noqa: BLE001 - PIL names many ways a file is not an image
        raise NodeFailure('PIL.UnidentifiedImageError',
                          f"cannot identify image file '/ComfyUI/input/{image}'") from None
    rgb = loaded.convert('RGB')
    mean = tuple(v / 255 for v in rgb.resize((1, 1), Image.BOX).getpixel((0, 0)))
    return (Picture(rgb.width, rgb.height, (mean,), (rgb,)), None), None


def validate_load_image(files, image, **_):
    """LoadImage.VALIDATE_INPUTS: the file must be in input/."""
    return True if files.get('input', *split_annotated(image)) else f'Invalid image file: {image}'


def load_image_changed(files, image, **_):
    """LoadImage.IS_CHANGED: the file's sha256, so a re-uploaded file runs again."""
    entry = files.get('input', *split_annotated(image))
    return hashlib.sha256(entry.data).hexdigest() if entry else None


def split_annotated(name):
    """(subfolder, filename) of an input name such as ``sub/x.png [input]``."""
    name = re.sub(r' \[(input|output|temp)\]$', '', str(name))
    return posixpath.dirname(name), posixpath.basename(name)


def run_upscale_model_loader(ctx, model_name, **_):
    found = re.search(r'(\d+)x|x(\d+)', model_name)
    scale = int(found.group(1) or found.group(2)) if found else 4
    return (UpscaleModel(model_name, scale),), None


def run_image_upscale_with_model(ctx, upscale_model, image, **_):
    """A model's enlargement, played by Lanczos on the real pixels: the size
    and the picture are what a model gives, the extra detail is not."""
    scale = upscale_model.scale
    width, height = image.width * scale, image.height * scale
    ctx.sampler_step(1, 1)  # tiled_scale reports its tiles on a progress bar
    pixels = tuple(p.resize((width, height), Image.LANCZOS) for p in image.pixels)
    return (Picture(width, height, image.colours, pixels),), None


def run_preview_image(ctx, images, **_):
    suffix = ''.join(random.choice('abcdefghijklmnopqrstupvxyz') for _ in range(5))
    return (), {'images': ctx.save(images, f'ComfyUI_temp_{suffix}', 'temp')}


def run_extra(ctx, **inputs):
    """A scenario-declared node: passes its first fitting input through."""
    node_class = ctx.node_class
    values = list(inputs.values())
    outputs = tuple(next((v for v in values if isinstance(v, (Picture, Latent))), None)
                    or Picture(1024, 1024, ((0.5, 0.5, 0.5),)) for _ in node_class.return_types)
    pictures = [v for v in values if isinstance(v, Picture)]
    if node_class.output_node and pictures:
        prefix = inputs.get('filename_prefix') or node_class.name
        return outputs, {'images': ctx.save(pictures[0], str(prefix), 'output')}
    return outputs, None


def image_input(tooltip=None):
    return ['IMAGE', {'tooltip': tooltip} if tooltip else {}]


def size_input(default, minimum, step):
    return ['INT', {'default': default, 'min': minimum, 'max': 16384, 'step': step}]


def loader_classes(checkpoints):
    return [
        NodeClass('CheckpointLoaderSimple', 'Load Checkpoint', 'loaders', {
            'ckpt_name': [list(checkpoints),
                          {'tooltip': 'The name of the checkpoint (model) to load.'}],
        }, ('MODEL', 'CLIP', 'VAE'), run_checkpoint_loader),
        NodeClass('CLIPTextEncode', 'CLIP Text Encode (Prompt)', 'conditioning', {
            'text': ['STRING', {'multiline': True, 'dynamicPrompts': True,
                                'tooltip': 'The text to be encoded.'}],
            'clip': ['CLIP', {'tooltip': 'The CLIP model used for encoding the text.'}],
        }, ('CONDITIONING',), run_clip_text_encode),
        NodeClass('EmptyLatentImage', 'Empty Latent Image', 'latent', {
            'width': size_input(512, 16, 8), 'height': size_input(512, 16, 8),
            'batch_size': ['INT', {'default': 1, 'min': 1, 'max': 4096}],
        }, ('LATENT',), run_empty_latent),
    ]


def sampler_classes():
    return [
        NodeClass('KSampler', 'KSampler', 'sampling', {
            'model': ['MODEL', {}],
            'seed': ['INT', {'default': 0, 'min': 0, 'max': 0xffffffffffffffff,
                             'control_after_generate': True}],
            'steps': ['INT', {'default': 20, 'min': 1, 'max': 10000}],
            'cfg': ['FLOAT', {'default': 8.0, 'min': 0.0, 'max': 100.0, 'step': 0.1,
                              'round': 0.01}],
            'sampler_name': [SAMPLERS, {}],
            'scheduler': [SCHEDULERS, {}],
            'positive': ['CONDITIONING', {}],
            'negative': ['CONDITIONING', {}],
            'latent_image': ['LATENT', {}],
            'denoise': ['FLOAT', {'default': 1.0, 'min': 0.0, 'max': 1.0, 'step': 0.01}],
        }, ('LATENT',), run_ksampler),
        NodeClass('VAEDecode', 'VAE Decode', 'latent', {
            'samples': ['LATENT', {}], 'vae': ['VAE', {}],
        }, ('IMAGE',), run_vae_decode),
    ]


def upscale_classes(models):
    return [
        NodeClass('UpscaleModelLoader', 'Load Upscale Model', 'loaders', {
            'model_name': [list(models), {}],
        }, ('UPSCALE_MODEL',), run_upscale_model_loader,
            module='comfy_extras.nodes_upscale_model'),
        NodeClass('ImageUpscaleWithModel', 'Upscale Image (using Model)', 'image/upscaling', {
            'upscale_model': ['UPSCALE_MODEL', {}], 'image': ['IMAGE', {}],
        }, ('IMAGE',), run_image_upscale_with_model, module='comfy_extras.nodes_upscale_model'),
    ]


def output_classes():
    return [
        NodeClass('SaveImage', 'Save Image', 'image', {
            'images': image_input('The images to save.'),
            'filename_prefix': ['STRING', {'default': 'ComfyUI'}],
        }, (), run_save_image, output_node=True, hidden=HIDDEN),
        NodeClass('PreviewImage', 'Preview Image', 'image', {'images': image_input()},
                  (), run_preview_image, output_node=True, hidden=HIDDEN),
    ]


def image_classes():
    return [
        # Its options are the files in input/ when /object_info is read.
        NodeClass('LoadImage', 'Load Image', 'image', {
            'image': [[], {'image_upload': True}],
        }, ('IMAGE', 'MASK'), run_load_image, validate=validate_load_image,
            is_changed=load_image_changed),
        NodeClass('EmptyImage', 'EmptyImage', 'image', {
            'width': ['INT', {'default': 512, 'min': 1, 'max': 16384, 'step': 1}],
            'height': ['INT', {'default': 512, 'min': 1, 'max': 16384, 'step': 1}],
            'batch_size': ['INT', {'default': 1, 'min': 1, 'max': 4096}],
            'color': ['INT', {'default': 0, 'min': 0, 'max': 16777215, 'step': 1,
                              'display': 'color'}],
        }, ('IMAGE',), run_empty_image),
        NodeClass('ImageBlend', 'Image Blend', 'image/postprocessing', {
            'image1': image_input(), 'image2': image_input(),
            'blend_factor': ['FLOAT', {'default': 0.5, 'min': 0.0, 'max': 1.0, 'step': 0.01}],
            'blend_mode': ['COMBO', {'multiselect': False, 'options': BLEND_MODES}],
        }, ('IMAGE',), run_image_blend, module='comfy_extras.nodes_post_processing', v3=True),
        NodeClass('ImageInvert', 'Invert Image', 'image', {'image': image_input()},
                  ('IMAGE',), run_image_invert),
        NodeClass('ImageBlur', 'Image Blur', 'image/postprocessing', {
            'image': image_input(),
            'blur_radius': ['INT', {'default': 1, 'min': 1, 'max': 31, 'step': 1}],
            'sigma': ['FLOAT', {'default': 1.0, 'min': 0.1, 'max': 10.0, 'step': 0.1}],
        }, ('IMAGE',), run_image_blur, module='comfy_extras.nodes_post_processing', v3=True),
    ]


def extra_class(name, spec):
    """A pass-through class from the ``extra_node_classes`` scenario knob."""
    required = spec.get('required', {})
    if isinstance(required, list):
        required = {input_name: ['*', {}] for input_name in required}
    else:
        required = {key: value if isinstance(value, list) else [value, {}]
                    for key, value in required.items()}
    output_node = bool(spec.get('output_node', False))
    outputs = tuple(spec.get('outputs', [] if output_node else ['IMAGE']))
    return NodeClass(name, name, spec.get('category', 'fake'), required, outputs, run_extra,
                     output_node=output_node, module='custom_nodes.fake')


def node_classes(scenario):
    """Every class this server knows, for the current scenario."""
    checkpoints = list(scenario['checkpoints'])
    checkpoints += [c for c in scenario['runtime_error_checkpoints'] if c not in checkpoints]
    classes = loader_classes(checkpoints) + sampler_classes() + output_classes()
    classes += image_classes() + upscale_classes(scenario['upscale_models'])
    classes += [extra_class(n, s) for n, s in (scenario['extra_node_classes'] or {}).items()]
    return {node_class.name: node_class for node_class in classes}


def object_info(node_class, files):
    """The /object_info entry of one class."""
    required = node_class.required
    if node_class.name == 'LoadImage':
        required = {'image': [files.names('input'), {'image_upload': True}]}
    inputs, order = {'required': required}, {'required': list(required)}
    if node_class.hidden:
        inputs['hidden'], order['hidden'] = node_class.hidden, list(node_class.hidden)
    outputs = list(node_class.return_types)
    return {'input': inputs, 'input_order': order, 'output': outputs,
            'output_is_list': [False] * len(outputs), 'output_name': outputs,
            'name': node_class.name, 'display_name': node_class.display_name,
            'description': '', 'python_module': node_class.module,
            'category': node_class.category, 'output_node': node_class.output_node}

###############################################################################
# Validation (execution.validate_prompt) ######################################
###############################################################################


def is_link(value):
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], (int, float)) and not isinstance(value[1], bool))


def types_match(received, wanted):
    """comfy_execution.validation.validate_node_input, non-strict."""
    if received == wanted:
        return True
    if not isinstance(received, str) or not isinstance(wanted, str):
        return False
    if '*' in (received, wanted):
        return True
    return bool({t.strip() for t in received.split(',')} & {t.strip() for t in wanted.split(',')})


def prompt_error(kind, message, details='', extra_info=None):
    return {'type': kind, 'message': message, 'details': details, 'extra_info': extra_info or {}}


def full_type_name(klass):
    module = klass.__module__
    return klass.__qualname__ if module == 'builtins' else f'{module}.{klass.__qualname__}'


class InputValidator:
    """ComfyUI's validate_inputs: checks one node and, recursively, what feeds it.

    ``validated`` maps node id to (valid, reasons, node id) and is shared by all
    outputs of a prompt, which is why ``dependent_outputs`` over-reports.
    """

    def __init__(self, prompt, classes, files):
        self.prompt = prompt
        self.classes = classes
        self.files = files
        self.validated = {}

    def validate_output(self, output_id):
        try:
            valid, reasons, _ = self.validate_inputs(output_id)
        except Exception as ex:  # A bad link on the output node itself.
            extra = {'exception_type': full_type_name(type(ex)),
                     'traceback': traceback.format_tb(ex.__traceback__)}
            reasons = [prompt_error('exception_during_validation',
                                    'Exception when validating node', str(ex), extra)]
            valid = False
            self.validated[output_id] = (False, reasons, output_id)
        return valid, reasons

    def collect_node_errors(self, output_id, node_errors):
        for node_id, (valid, reasons, _) in self.validated.items():
            if valid is True or not reasons:
                continue
            if node_id not in node_errors:
                node_errors[node_id] = {'errors': reasons, 'dependent_outputs': [],
                                        'class_type': self.prompt[node_id]['class_type']}
            node_errors[node_id]['dependent_outputs'].append(output_id)

    def validate_inputs(self, node_id):
        if node_id in self.validated:
            return self.validated[node_id]
        inputs = self.prompt[node_id]['inputs']
        node_class = self.classes[self.prompt[node_id]['class_type']]
        errors, valid = [], True
        for name, spec in node_class.required.items():
            info = (spec[0], spec[1] if len(spec) > 1 else {})
            if name not in inputs:
                errors.append(prompt_error('required_input_missing', 'Required input is missing',
                                           name, {'input_name': name}))
            elif isinstance(inputs[name], list):
                error, linked_ok = self.check_link(name, inputs[name], info)
                errors += [error] if error else []
                valid = valid and linked_ok
            elif node_class.validate is None:  # VALIDATE_INPUTS replaces the checks
                errors += self.check_value(inputs, name, info)
        if node_class.validate is not None and not errors:
            errors += self.custom_validation(node_class, inputs)
        result = (not errors and valid, errors, node_id)
        self.validated[node_id] = result
        return result

    def check_link(self, name, link, info):
        """(error or None, whether the linked node is valid)."""
        if len(link) != 2:
            return prompt_error('bad_linked_input', 'Bad linked input, must be a length-2 list '
                                'of [node_id, slot_index]', name, {
                                    'input_name': name, 'input_config': info,
                                    'received_value': link}), True
        linked_id = link[0]
        linked_class = self.classes[self.prompt[linked_id]['class_type']]
        received = linked_class.return_types[link[1]]
        if not types_match(received, info[0]):
            details = f'{name}, received_type({received}) mismatch input_type({info[0]})'
            return prompt_error('return_type_mismatch',
                                'Return type mismatch between linked nodes', details,
                                {'input_name': name, 'input_config': info,
                                 'received_type': received, 'linked_node': link}), True
        try:
            return None, self.validate_inputs(linked_id)[0]
        except Exception as ex:
            reasons = [self.inner_error(name, link, info, ex)]
            self.validated[linked_id] = (False, reasons, linked_id)
            return None, False

    def custom_validation(self, node_class, inputs):
        """A class's VALIDATE_INPUTS, reported as execution.validate_inputs does."""
        values = {name: inputs[name] for name in node_class.required if name in inputs}
        answer = node_class.validate(self.files, **values)
        if answer is True:
            return []
        return [prompt_error('custom_validation_failed', 'Custom validation failed for node',
                             f'{name} - {answer}', {'input_name': name}) for name in values]

    @staticmethod
    def inner_error(name, link, info, ex):
        return prompt_error('exception_during_inner_validation', 'Exception when validating inner '
                            'node', str(ex), {
                                'input_name': name, 'input_config': info,
                                'exception_message': str(ex),
                                'exception_type': full_type_name(type(ex)),
                                'traceback': traceback.format_tb(ex.__traceback__),
                                'linked_node': link})

    @staticmethod
    def check_value(inputs, name, info):
        """Convert a widget value in place and check its limits; a list of errors."""
        kind, extra = info
        value = inputs[name]
        if isinstance(value, dict) and '__value__' in value:
            value = inputs[name] = value['__value__']
        convert = CONVERTERS.get(kind) if isinstance(kind, str) else None
        try:
            value = inputs[name] = convert(value) if convert else value
        except Exception as ex:
            return [prompt_error('invalid_input_type', f'Failed to convert an input value to a '
                                 f'{kind} value', f'{name}, {value}, {ex}', {
                                     'input_name': name, 'input_config': info,
                                     'received_value': value, 'exception_message': str(ex)})]
        return check_limits(name, value, info)


def check_limits(name, value, info):
    kind, extra = info
    details = {'input_name': name, 'input_config': info, 'received_value': value}
    if 'min' in extra and value < extra['min']:
        return [prompt_error('value_smaller_than_min',
                             f"Value {value} smaller than min of {extra['min']}", name, details)]
    if 'max' in extra and value > extra['max']:
        return [prompt_error('value_bigger_than_max',
                             f"Value {value} bigger than max of {extra['max']}", name, details)]
    # V3 combos (["COMBO", {"options": ...}]) were seen NOT validated in 0.3.64.
    if isinstance(kind, list) and value not in kind:
        listed = f'(list of length {len(kind)})' if len(kind) > 20 else str(kind)
        details['input_config'] = None if len(kind) > 20 else info
        return [prompt_error('value_not_in_list', 'Value not in list',
                             f"{name}: '{value}' not in {listed}", details)]
    return []


def validate_prompt(prompt, classes, targets, files):
    """execution.validate_prompt: (ok, error, good output ids, node_errors)."""
    outputs = []
    for node_id, node in prompt.items():
        if 'class_type' not in node:
            return False, prompt_error('invalid_prompt', 'Cannot execute because a node is '
                                       'missing the class_type property.',
                                       f"Node ID '#{node_id}'"), [], {}
        node_class = classes.get(node['class_type'])
        if node_class is None:
            return False, prompt_error('invalid_prompt', f"Cannot execute because node "
                                       f"{node['class_type']} does not exist.",
                                       f"Node ID '#{node_id}'"), [], {}
        if node_class.output_node and (targets is None or node_id in targets):
            outputs.append(node_id)
    if not outputs:
        return False, prompt_error('prompt_no_outputs', 'Prompt has no outputs'), [], {}
    return validate_outputs(prompt, classes, outputs, files)


def validate_outputs(prompt, classes, outputs, files):
    validator = InputValidator(prompt, classes, files)
    good, failures, node_errors = [], [], {}
    for output_id in outputs:
        valid, reasons = validator.validate_output(output_id)
        if valid:
            good.append(output_id)
            continue
        failures.append(reasons)
        validator.collect_node_errors(output_id, node_errors)
    if good:
        return True, None, good, node_errors
    details = '\n'.join(f"{r['message']}: {r['details']}" for rs in failures for r in rs)
    return False, prompt_error('prompt_outputs_failed_validation',
                               'Prompt outputs failed validation', details), [], node_errors

###############################################################################
# Execution ###################################################################
###############################################################################


def node_signatures(prompt, classes, files):
    """Cache keys: a node's class and inputs, with links replaced by the linked
    node's key (CacheKeySetInputSignature), and what IS_CHANGED says of it.
    None when a link cannot be resolved."""
    signatures = {}

    def signature(node_id, visiting):
        if node_id in signatures:
            return signatures[node_id]
        if node_id in visiting or not isinstance(prompt.get(node_id), dict):
            return None
        node, parts = prompt[node_id], []
        for name, value in sorted(node.get('inputs', {}).items()):
            if is_link(value):
                value = ['link', signature(value[0], visiting | {node_id}), value[1]]
                if value[1] is None:
                    return None
            parts.append([name, value])
        node_class = classes.get(node.get('class_type'))
        if node_class is not None and node_class.is_changed is not None:
            parts.append(['is_changed', node_class.is_changed(files, **node.get('inputs', {}))])
        text = json.dumps([node.get('class_type'), parts], sort_keys=True, default=str)
        signatures[node_id] = hashlib.sha1(text.encode()).hexdigest()
        return signatures[node_id]
    for node_id in prompt:
        signature(node_id, frozenset())
    return signatures


class ExecutionList:
    """comfy_execution.graph.ExecutionList: picks the next node in ComfyUI's order."""

    def __init__(self, prompt, classes, is_cached):
        self.prompt, self.classes, self.is_cached = prompt, classes, is_cached
        self.pending, self.block_count, self.blocking = {}, {}, {}

    def add_node(self, node_id):
        stack, links = [node_id], []
        while stack:
            unique_id = stack.pop()
            if unique_id in self.pending:
                continue
            self.pending[unique_id] = True
            self.block_count[unique_id], self.blocking[unique_id] = 0, {}
            for value in self.prompt[unique_id]['inputs'].values():
                if is_link(value):
                    if not self.is_cached(value[0]):
                        stack.append(value[0])
                    links.append((value[0], unique_id))
        for from_id, to_id in links:
            self.add_strong_link(from_id, to_id)

    def add_strong_link(self, from_id, to_id):
        if self.is_cached(from_id):
            return
        self.add_node(from_id)
        if to_id not in self.blocking[from_id]:
            self.blocking[from_id][to_id] = True
            self.block_count[to_id] += 1

    def next_node(self):
        """The ready node ComfyUI's ux_friendly_pick_node would choose, or None."""
        ready = [n for n in self.pending if self.block_count[n] == 0]
        if not ready:
            return None
        for depth in range(3):
            for node_id in ready:
                if self.leads_to_output(node_id, depth):
                    return node_id
        return ready[0]

    def leads_to_output(self, node_id, depth):
        if depth == 0:
            return self.is_output(node_id)
        return any(self.leads_to_output(blocked, depth - 1) for blocked in self.blocking[node_id])

    def is_output(self, node_id):
        return self.classes[self.prompt[node_id]['class_type']].output_node

    def complete(self, node_id):
        del self.pending[node_id]
        for blocked in self.blocking.pop(node_id):
            self.block_count[blocked] -= 1


class NodeContext:
    """What a running node may use: the scenario, sampler steps, file saving."""

    def __init__(self, run, node_id, node_class):
        self.run, self.node_id, self.node_class = run, node_id, node_class
        self.scenario = run.comfy.scenario

    def sampler_step(self, value, total):
        gevent.sleep(float(self.scenario['step_seconds']))
        self.run.check_interrupt()  # ComfyUI's progress hook checks before reporting.
        self.run.update_progress(self.node_id, value, total)
        self.run.send('progress', {'value': value, 'max': total, 'prompt_id': self.run.prompt_id,
                                   'node': self.node_id}, always=True)

    def save(self, picture, prefix, kind):
        extra = self.run.extra_data.get('extra_pnginfo') or {}
        return self.run.comfy.files.save_images(picture, prefix, kind, self.scenario['image_size'],
                                                {'prompt': self.run.prompt, **extra},
                                                self.scenario['picture'])


class PromptRun:
    """One prompt through PromptExecutor.execute: events, caching, errors."""

    def __init__(self, comfy, item):
        self.comfy = comfy
        self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs = item[:5]
        self.client_id = self.extra_data.get('client_id')
        self.messages, self.progress, self.executed = [], {}, []
        self.ui_outputs, self.values = {}, {}
        self.cached, self.signatures = {}, {}
        self.success = False
        self.interrupted = False

    # Events ---------------------------------------------------------------

    def send(self, event, data, always=False):
        """To the prompt's client; with ``always`` a client-less prompt broadcasts
        (as ComfyUI's send_sync does with sid None)."""
        if self.client_id is not None or always:
            self.comfy.sockets.send(event, data, self.client_id)

    def add_message(self, event, data, broadcast=False):
        data = {**data, 'timestamp': int(time.time() * 1000)}
        self.messages.append([event, data])
        self.send(event, data, always=broadcast)

    def update_progress(self, node_id, value, total, state='running'):
        self.progress[node_id] = {'value': float(value), 'max': float(total), 'state': state}
        nodes = {nid: {**entry, 'node_id': nid, 'prompt_id': self.prompt_id,
                       'display_node_id': nid, 'parent_node_id': None, 'real_node_id': nid}
                 for nid, entry in self.progress.items()}
        self.send('progress_state', {'prompt_id': self.prompt_id, 'nodes': nodes}, always=True)

    def finish_progress(self, node_id):
        total = self.progress.get(node_id, {}).get('max', 1.0)
        self.update_progress(node_id, total, total, 'finished')

    def check_interrupt(self):
        if self.comfy.state.interrupt_requested:
            raise Interrupted()

    # Running ----------------------------------------------------------------

    def execute(self):
        self.comfy.state.interrupt_requested = False
        self.add_message('execution_start', {'prompt_id': self.prompt_id})
        self.signatures = node_signatures(self.prompt, self.comfy.state.classes, self.comfy.files)
        cache = self.comfy.state.cache
        cache.prune(set(self.signatures.values()))
        found = {node_id: cache.get(s) for node_id, s in self.signatures.items()}
        self.cached = {node_id: entry for node_id, entry in found.items() if entry}
        self.add_message('execution_cached', {'nodes': list(self.cached),
                                              'prompt_id': self.prompt_id})
        self.run_graph()
        self.comfy.state.last_node_id = None

    def run_graph(self):
        order = ExecutionList(self.prompt, self.comfy.state.classes, self.cached.__contains__)
        for output_id in self.outputs:
            order.add_node(output_id)
        while (node_id := order.next_node()) is not None:
            error = self.execute_node(node_id)
            if error is not None:
                self.handle_error(*error)
                return
            order.complete(node_id)
        self.success = True
        self.add_message('execution_success', {'prompt_id': self.prompt_id})

    def execute_node(self, node_id):
        """Run or reuse one node; None, or (node id, exception, inputs) on failure."""
        if node_id in self.cached:
            return self.reuse_cached(node_id)
        node = self.prompt[node_id]
        node_class = self.comfy.state.classes[node['class_type']]
        self.update_progress(node_id, 0, 1)
        self.comfy.state.last_node_id = node_id
        self.send('executing', {'node': node_id, 'display_node': node_id,
                                'prompt_id': self.prompt_id})
        inputs = None
        try:
            self.check_interrupt()
            inputs = self.resolve_inputs(node, node_class)
            outputs, ui = self.call_node(node_id, node_class, inputs)
        except Exception as ex:  # noqa: BLE001 - a failing node is an execution_error
            return node_id, ex, inputs
        self.store(node_id, outputs, ui)
        self.finish_progress(node_id)
        self.executed.append(node_id)
        return None

    def reuse_cached(self, node_id):
        entry = self.cached[node_id]
        self.values[node_id] = entry.outputs
        if entry.ui is not None:
            self.ui_outputs[node_id] = entry.ui
            self.send('executed', {'node': node_id, 'display_node': node_id,
                                   'output': entry.ui, 'prompt_id': self.prompt_id})
        self.finish_progress(node_id)
        return None

    def resolve_inputs(self, node, node_class):
        inputs = {}
        for name, value in node['inputs'].items():
            if name not in node_class.required:
                continue
            if is_link(value):
                linked = value[0]
                source = (self.values[linked] if linked in self.values
                          else self.cached[linked].outputs)
                value = source[int(value[1])]
            inputs[name] = value
        if node_class.hidden:
            inputs.update(prompt=self.prompt, extra_pnginfo=self.extra_data.get('extra_pnginfo'))
        return inputs

    def call_node(self, node_id, node_class, inputs):
        scenario = self.comfy.scenario
        if node_class.name == scenario['fail_node_class']:
            raise NodeFailure(scenario['fail_exception_type'], scenario['fail_message'])
        if node_class.name != 'KSampler':
            gevent.sleep(float(scenario['node_seconds'] or 0))
        context = NodeContext(self, node_id, node_class)
        return node_class.run(context, **inputs)

    def store(self, node_id, outputs, ui):
        self.values[node_id] = outputs
        if ui:
            self.ui_outputs[node_id] = ui
            self.send('executed', {'node': node_id, 'display_node': node_id, 'output': ui,
                                   'prompt_id': self.prompt_id})
        self.comfy.state.cache.put(self.signatures.get(node_id), outputs, ui or None)

    # Failures -------------------------------------------------------------

    def handle_error(self, node_id, ex, inputs):
        base = {'prompt_id': self.prompt_id, 'node_id': node_id,
                'node_type': self.prompt[node_id]['class_type'],
                'executed': list(reversed(self.executed))}
        if isinstance(ex, Interrupted):
            self.interrupted = True
            self.add_message('execution_interrupted', base, broadcast=True)
            return
        if not isinstance(ex, NodeFailure):
            print(f'fake comfyui: node {node_id} crashed', file=sys.stderr)
            traceback.print_exception(ex)
        self.add_message('execution_error', {
            **base, 'exception_message': f'{ex}\n', 'exception_type': exception_type(ex),
            'traceback': node_traceback(self.prompt[node_id]['class_type']),
            'current_inputs': {k: [format_value(v)] for k, v in (inputs or {}).items()},
            'current_outputs': list(self.prompt)})

    def history_result(self):
        meta = {n: {'node_id': n, 'display_node': n, 'parent_node': None, 'real_node_id': n}
                for n in self.ui_outputs}
        return {'outputs': dict(self.ui_outputs), 'meta': meta}


def exception_type(ex):
    if isinstance(ex, NodeFailure):
        return ex.exception_type
    return full_type_name(type(ex))


def node_traceback(class_type):
    """A ComfyUI-shaped traceback ending in the node's function."""
    frames = list(TRACEBACK)
    if class_type == 'KSampler':
        statement = ('return common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, '
                     'positive, negative, latent_image, denoise=denoise)')
    else:
        statement = 'return self.execute(**kwargs)'
    frames[4] = frames[4].format(line=1537 if class_type == 'KSampler' else 1890,
                                 function=class_type.lower(), statement=statement)
    return frames

###############################################################################
# Storage: cache, files, queue, history #######################################
###############################################################################


class CacheEntry(NamedTuple):
    outputs: tuple
    ui: dict


class OutputCache:
    """The classic cache: outputs by signature, kept only for the latest prompt."""

    def __init__(self):
        self.entries = {}

    def get(self, signature):
        return self.entries.get(signature) if signature else None

    def put(self, signature, outputs, ui):
        if signature:
            self.entries[signature] = CacheEntry(outputs, ui)

    def prune(self, keep):
        self.entries = {s: e for s, e in self.entries.items() if s in keep}


class FileEntry(NamedTuple):
    data: bytes
    mtime: float


class Files:
    """The output, temp and input folders, in memory: {(type, subfolder, name): FileEntry}."""

    def __init__(self):
        self.entries = {}

    def get(self, kind, subfolder, filename):
        return self.entries.get((kind, subfolder, filename))

    def put(self, kind, subfolder, filename, data):
        self.entries[(kind, subfolder, filename)] = FileEntry(data, time.time())

    def paths(self):
        return [posixpath.join(sub, name) for (_, sub, name) in self.entries]

    def names(self, kind):
        """The files of one folder as LoadImage lists them (sorted)."""
        return sorted(posixpath.join(sub, name) for (k, sub, name) in self.entries if k == kind)

    def next_counter(self, kind, subfolder, base):
        """One more than the highest ``<base>_NNNNN_`` already there (folder_paths)."""
        pattern = re.compile(re.escape(base) + r'_(\d+)_')
        found = [int(m.group(1)) for (k, sub, name) in self.entries
                 if k == kind and sub == subfolder and (m := pattern.match(name))]
        return max(found, default=0) + 1

    def save_images(self, picture, prefix, kind, size_override, metadata, look='flat'):
        """SaveImage.save_images: one PNG per batch image; the ``images`` entries."""
        subfolder, base = split_prefix(prefix)
        counter = self.next_counter(kind, subfolder, base)
        size = image_size(picture, size_override)
        results = []
        for batch_number, colour in enumerate(picture.colours):
            name = f"{base.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
            pixels = picture.pixels[batch_number] if picture.pixels else None
            self.put(kind, subfolder, name, png_bytes(size, colour, metadata, look, pixels))
            results.append({'filename': name, 'subfolder': subfolder, 'type': kind})
            counter += 1
        return results


def split_prefix(prefix):
    """(subfolder, basename) of a filename_prefix; raises like ComfyUI outside output/."""
    normal = posixpath.normpath(prefix)
    subfolder, base = posixpath.dirname(normal), posixpath.basename(normal)
    folder = posixpath.abspath(posixpath.join(OUTPUT_DIR, subfolder))
    common = posixpath.commonpath((OUTPUT_DIR, folder))
    if common != OUTPUT_DIR:
        raise NodeFailure('Exception', (
            '**** ERROR: Saving image outside the output folder is not allowed.'
            f'\n full_output_folder: {folder}\n         output_dir: {OUTPUT_DIR}'
            f'\n         commonpath: {common}'))
    return subfolder, base


def image_size(picture, override):
    if override is None:
        return picture.width, picture.height
    if isinstance(override, (int, float)):
        return int(override), int(override)
    return int(override[0]), int(override[1])


def png_bytes(size, colour, metadata, look='flat', pixels=None):
    """A PNG of one colour (``look`` 'subject': a disc of it on white), or of
    ``pixels`` when the image has real ones, with the prompt in tEXt chunks
    as SaveImage writes."""
    pixel = tuple(int(min(255.0, max(0.0, 255.0 * value))) for value in colour)
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, json.dumps(value))
    buffer = BytesIO()
    if pixels is not None:
        image = pixels
    elif look == 'subject':
        image = subject_on_white(size, pixel)
    else:
        image = Image.new('RGB', size, pixel)
    image.save(buffer, 'PNG', pnginfo=info, compress_level=4)
    return buffer.getvalue()


def subject_on_white(size, pixel):
    """What a model prompted for an isolated subject on a plain white
    background paints: an antialiased disc, with a white highlight inside. A
    colour close to white is darkened: a model asked for a subject on white
    does not paint it white (a test would then find nothing to cut out)."""
    if min(pixel) > 170:
        pixel = tuple(v // 2 for v in pixel)
    big = Image.new('RGB', (size[0] * 2, size[1] * 2), (255, 255, 255))
    draw = ImageDraw.Draw(big)
    w, h = big.size
    draw.ellipse((w * .25, h * .2, w * .75, h * .8), fill=pixel)
    draw.ellipse((w * .42, h * .35, w * .5, h * .45), fill=(255, 255, 255))
    return big.reduce(2)


class ServerState:
    """Everything a restart of ComfyUI would lose."""

    def __init__(self, scenario):
        self.classes = node_classes(scenario)
        self.number = 0
        self.task_counter = 0
        self.sequence = 0          # ties in the heap keep POST order
        self.queue = []            # heap of (number, sequence, item); item is the 6-list
        self.enqueued_at = {}      # prompt id -> monotonic time of its POST
        self.running = {}          # task id -> item
        self.history = {}
        self.cache = OutputCache()
        self.interrupt_requested = False
        self.client_id = None
        self.last_node_id = None
        self.interrupted, self.deleted = [], []

    def remaining(self):
        return len(self.queue) + len(self.running)

    def pending_items(self):
        return [entry[2][:5] for entry in self.queue]

    def running_items(self):
        return [item[:5] for item in self.running.values()]

    def history_slice(self, max_items=None, offset=-1):
        """PromptQueue.get_history for all prompts."""
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        keys = list(self.history)[max(offset, 0):]
        return {key: self.history[key] for key in keys[:max_items]}

###############################################################################
# WebSocket clients ###########################################################
###############################################################################


class Client:
    def __init__(self, sid, ws):
        self.sid, self.ws = sid, ws
        self.lock = Semaphore()
        self.sent = 0


class Sockets:
    """PromptServer.sockets: connected /ws clients by sid."""

    def __init__(self, scenario_getter):
        self.clients = {}
        self.scenario = scenario_getter

    def add(self, sid, ws):
        """Register a socket; the same sid replaces the old one, which stays open but deaf."""
        client = Client(sid, ws)
        self.clients[sid] = client
        return client

    def remove(self, client):
        if self.clients.get(client.sid) is client:
            del self.clients[client.sid]

    def send(self, event, data, sid=None):
        """Send ``{"type", "data"}`` to ``sid``, or to everyone when sid is None."""
        text = json.dumps({'type': event, 'data': data})
        targets = list(self.clients.values()) if sid is None else [self.clients.get(sid)]
        for client in targets:
            if client is not None:
                self.send_to(client, text)

    def send_to(self, client, text):
        limit = self.scenario().get('ws_drop_after_events')
        with client.lock:
            if client.ws.closed:
                return
            try:
                client.ws.send(text)
            except Exception as ex:  # noqa: BLE001 - a gone client is dropped, as aiohttp does
                print(f'fake comfyui: dropping {client.sid}: {ex!r}', file=sys.stderr)
                self.remove(client)
                return
            client.sent += 1
            if limit and client.sent >= int(limit):
                self.drop(client)

    def drop(self, client):
        """Close the socket under the client's feet (ws_drop_after_events)."""
        self.remove(client)
        try:
            raw = client.ws.handler.socket
            client.ws.close()
            raw.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError) as ex:
            print(f'fake comfyui: closing {client.sid}: {ex!r}', file=sys.stderr)

###############################################################################
# The fake server #############################################################
###############################################################################


class FakeComfyUI:
    """State, worker and scenario of one fake ComfyUI; the routes call into it."""

    def __init__(self):
        self.scenario = copy.deepcopy(DEFAULT_SCENARIO)
        self.requests = []
        self.sockets = Sockets(lambda: self.scenario)
        self.files = Files()
        self.state = ServerState(self.scenario)
        self.wakeup = Event()
        self.worker = gevent.spawn(self.work)

    def reset(self):
        self.worker.kill(block=True, timeout=2)
        self.scenario = copy.deepcopy(DEFAULT_SCENARIO)
        self.requests, self.files = [], Files()
        self.state = ServerState(self.scenario)
        self.worker = gevent.spawn(self.work)

    def configure(self, changes):
        self.scenario.update(changes)
        self.state.classes = node_classes(self.scenario)
        self.wakeup.set()

    # Queue ------------------------------------------------------------------

    def queue_updated(self):
        self.sockets.send('status', {'status': self.exec_info()})

    def exec_info(self):
        return {'exec_info': {'queue_remaining': self.state.remaining()}}

    def put(self, item):
        state = self.state
        state.enqueued_at[item[1]] = time.monotonic()
        state.sequence += 1
        heapq.heappush(state.queue, (item[0], state.sequence, item))
        self.queue_updated()
        self.wakeup.set()

    def delete_pending(self, prompt_id):
        state = self.state
        for index, entry in enumerate(state.queue):
            if entry[2][1] == prompt_id:
                state.queue.pop(index)
                heapq.heapify(state.queue)
                state.deleted.append(prompt_id)
                self.queue_updated()
                return

    def wipe_pending(self):
        self.state.deleted += [entry[2][1] for entry in self.state.queue]
        self.state.queue = []
        self.queue_updated()

    def interrupt(self, prompt_id):
        running = [item[1] for item in self.state.running.values()]
        if not prompt_id or prompt_id in running:
            self.state.interrupt_requested = True

    # Worker -----------------------------------------------------------------

    def work(self):
        """The prompt_worker thread: one prompt at a time, in queue order."""
        while True:
            task_id, item = self.take()
            try:
                self.run_item(task_id, item)
            except Exception:  # noqa: BLE001 - keep serving, like ComfyUI's worker
                print('fake comfyui: prompt worker failed', file=sys.stderr)
                traceback.print_exc()
                self.state.running.pop(task_id, None)

    def take(self):
        """Pop the next prompt once its queue_delay_seconds are over."""
        while True:
            self.wakeup.clear()
            state = self.state
            if state.queue:
                head = state.queue[0][2]
                delay = float(self.scenario['queue_delay_seconds'] or 0)
                wait = state.enqueued_at.get(head[1], 0) + delay - time.monotonic()
                if wait <= 0:
                    return self.start(heapq.heappop(state.queue)[2])
                self.wakeup.wait(min(wait, 0.05))
            else:
                self.wakeup.wait()

    def start(self, item):
        state = self.state
        task_id = state.task_counter
        state.task_counter += 1
        state.running[task_id] = item
        self.queue_updated()
        return task_id, item

    def run_item(self, task_id, item):
        run = PromptRun(self, item)
        self.state.client_id = run.client_id
        run.execute()
        self.task_done(task_id, run)
        if run.client_id is not None:
            self.sockets.send('executing', {'node': None, 'prompt_id': run.prompt_id},
                              run.client_id)

    def task_done(self, task_id, run):
        state = self.state
        item = state.running.pop(task_id)
        if len(state.history) > MAXIMUM_HISTORY_SIZE:
            state.history.pop(next(iter(state.history)))
        state.history[item[1]] = {
            'prompt': item[:5], 'outputs': {},
            'status': {'status_str': 'success' if run.success else 'error',
                       'completed': run.success, 'messages': run.messages},
            **run.history_result()}
        if run.interrupted:
            state.interrupted.append(item[1])
        self.queue_updated()

    # Prompt submission ----------------------------------------------------

    def post_prompt(self, body):
        """POST /prompt on a parsed body: (status, JSON answer)."""
        state = self.state
        if isinstance(body, list):  # aiohttp's `"prompt" in json_data` is False for a list
            body = {}
        if 'number' in body:
            number = float(body['number'])
        else:
            number = -state.number if body.get('front') else state.number
            state.number += 1
        if 'prompt' not in body:
            return 400, {'error': prompt_error('no_prompt', 'No prompt provided',
                                               'No prompt provided'), 'node_errors': {}}
        prompt = body['prompt']
        prompt_id = str(body.get('prompt_id', uuid.uuid4()))
        ok, error, outputs, node_errors = validate_prompt(prompt, state.classes,
                                                          body.get('partial_execution_targets'),
                                                          self.files)
        extra_data = dict(body.get('extra_data', {}))
        if 'client_id' in body:
            extra_data['client_id'] = body['client_id']
        if not ok:
            return 400, {'error': error, 'node_errors': node_errors}
        sensitive = {k: extra_data.pop(k) for k in SENSITIVE_EXTRA_DATA_KEYS if k in extra_data}
        self.put([number, prompt_id, prompt, extra_data, outputs, sensitive])
        return 200, {'prompt_id': prompt_id, 'number': number, 'node_errors': node_errors}

    # Fake control ---------------------------------------------------------

    def record(self, request):
        body = None
        if request.content_length > 0 and 'wsgi.websocket' not in request.environ:
            try:
                body = json.loads(request.body.read() or b'null')
            except ValueError:
                body = None
        self.requests.append({'method': request.method, 'path': request.path,
                              'query': dict(request.query.decode()), 'json': body,
                              'headers': dict(request.headers)})

    def snapshot(self):
        state = self.state
        return {'queue_running': [item[1] for item in state.running_items()],
                'queue_pending': [item[1] for item in state.pending_items()],
                'history': list(state.history), 'interrupted': list(state.interrupted),
                'deleted': list(state.deleted), 'files': self.files.paths()}

###############################################################################
# HTTP helpers ################################################################
###############################################################################


def json_response(data, status=200):
    return bottle.HTTPResponse(json.dumps(data), status,
                               {'Content-Type': 'application/json; charset=utf-8'})


def empty_response(status=200):
    return bottle.HTTPResponse('', status, {'Content-Type': 'application/octet-stream'})


def text_response(text, status):
    return bottle.HTTPResponse(text, status, {'Content-Type': 'text/plain; charset=utf-8'})


def server_error():
    return text_response(SERVER_ERROR, 500)


def read_json():
    """The request body as JSON, the way aiohttp's ``await request.json()`` reads it."""
    return json.loads(bottle.request.body.read() or b'')


def routes(app, method, path, callback):
    """Register ``path`` and ``/api`` + ``path``, as ComfyUI does."""
    app.route(path, method, callback)
    app.route('/api' + path, method, callback)


def file_response(entry, filename):
    headers = {'Content-Type': 'image/png', 'Content-Disposition': f'filename="{filename}"',
               'Etag': f'"{int(entry.mtime * 1e9):x}-{len(entry.data):x}"',
               'Last-Modified': formatdate(entry.mtime, usegmt=True),
               'Content-Length': str(len(entry.data))}
    return bottle.HTTPResponse(entry.data, 200, headers)

###############################################################################
# Routes ######################################################################
###############################################################################


def add_info_routes(app, fake):
    def system_stats():
        """GET /system_stats: versions, RAM and devices."""
        gevent.sleep(float(fake.scenario['system_stats_delay'] or 0))
        return json_response(SYSTEM_STATS)

    def all_object_info():
        """GET /object_info: every class."""
        return json_response({n: object_info(c, fake.files)
                              for n, c in fake.state.classes.items()})

    def one_object_info(node_class):
        """GET /object_info/<class>: that class, or {} when unknown."""
        found = fake.state.classes.get(node_class)
        return json_response({node_class: object_info(found, fake.files)} if found else {})

    def models(folder=None):
        """GET /models and /models/<folder>."""
        if folder is None:
            return json_response(MODEL_FOLDERS)
        if folder not in MODEL_FOLDERS:
            return empty_response(404)
        listed = {'checkpoints': ('CheckpointLoaderSimple', 'ckpt_name'),
                  'upscale_models': ('UpscaleModelLoader', 'model_name')}
        if folder not in listed:
            return json_response([])
        class_name, input_name = listed[folder]
        return json_response(list(fake.state.classes[class_name].required[input_name][0]))

    routes(app, 'GET', '/system_stats', system_stats)
    routes(app, 'GET', '/object_info', all_object_info)
    routes(app, 'GET', '/object_info/<node_class>', one_object_info)
    routes(app, 'GET', '/models', models)
    routes(app, 'GET', '/models/<folder>', models)
    routes(app, 'GET', '/features', lambda: json_response(FEATURES))
    routes(app, 'GET', '/embeddings', lambda: json_response([]))
    routes(app, 'GET', '/extensions', lambda: json_response([]))


def add_prompt_routes(app, fake):
    def get_prompt():
        """GET /prompt: how many prompts are running or pending."""
        return json_response(fake.exec_info())

    def post_prompt():
        """POST /prompt: validate and queue; 400 bodies as execution.validate_prompt."""
        try:
            body = read_json()
            status, answer = fake.post_prompt(body)
        except ValueError as ex:
            print(f'fake comfyui: POST /prompt body is not JSON: {ex}', file=sys.stderr)
            return server_error()
        except Exception:  # noqa: BLE001 - aiohttp answers any crash with a bare 500
            traceback.print_exc()
            return server_error()
        return json_response(answer, status)

    def post_interrupt():
        """POST /interrupt: the running prompt (if its id matches) stops at the next step."""
        try:
            body = read_json()
        except ValueError:
            body = {}
        fake.interrupt(body.get('prompt_id'))
        return empty_response()

    routes(app, 'GET', '/prompt', get_prompt)
    routes(app, 'POST', '/prompt', post_prompt)
    routes(app, 'POST', '/interrupt', post_interrupt)
    routes(app, 'POST', '/free', lambda: empty_response())


def add_queue_routes(app, fake):
    def get_queue():
        """GET /queue: running and pending items, as 5-lists with the whole workflow."""
        state = fake.state
        return json_response({'queue_running': state.running_items(),
                              'queue_pending': state.pending_items()})

    def post_queue():
        """POST /queue: {"clear": true} wipes pending, {"delete": [ids]} removes pending."""
        body = read_json()
        if body.get('clear'):
            fake.wipe_pending()
        for prompt_id in body.get('delete', []):
            fake.delete_pending(prompt_id)
        return empty_response()

    def get_history(prompt_id=None):
        """GET /history[/<id>]: finished prompts; {} for anything else."""
        history = fake.state.history
        if prompt_id is not None:
            return json_response({prompt_id: history[prompt_id]} if prompt_id in history else {})
        query = bottle.request.query
        max_items = int(query['max_items']) if 'max_items' in query else None
        return json_response(fake.state.history_slice(max_items, int(query.get('offset', -1))))

    def post_history():
        """POST /history: {"clear": true} or {"delete": [ids]}."""
        body = read_json()
        if body.get('clear'):
            fake.state.history.clear()
        for prompt_id in body.get('delete', []):
            fake.state.history.pop(prompt_id, None)
        return empty_response()

    routes(app, 'GET', '/queue', get_queue)
    routes(app, 'POST', '/queue', post_queue)
    routes(app, 'GET', '/history', get_history)
    routes(app, 'GET', '/history/<prompt_id>', get_history)
    routes(app, 'POST', '/history', post_history)


def add_file_routes(app, fake):
    def view():
        """GET /view?filename=&subfolder=&type=: a stored file, 400/403/404 otherwise."""
        query = bottle.request.query.decode()
        filename = query.get('filename')
        if filename is None:
            return empty_response(404)
        if not filename or filename[0] == '/' or '..' in filename:
            return empty_response(400)
        kind = query.get('type', 'output')
        if kind not in FILE_TYPES:
            return empty_response(400)
        subfolder = query.get('subfolder', '')
        folder = posixpath.normpath(posixpath.join('/root', subfolder))
        if posixpath.commonpath(('/root', folder)) != '/root':
            return empty_response(403)
        name = posixpath.basename(filename)
        relative = posixpath.relpath(folder, '/root')
        entry = fake.files.get(kind, '' if relative == '.' else relative, name)
        return file_response(entry, name) if entry else empty_response(404)

    def upload_image():
        """POST /upload/image (multipart ``image``): stores it under input/."""
        form = bottle.request.forms.decode()
        upload = bottle.request.files.get('image')
        if upload is None:
            return empty_response(400)
        kind, subfolder = form.get('type') or 'input', form.get('subfolder', '')
        name = upload.raw_filename
        if fake.files.get(kind, subfolder, name) and form.get('overwrite') not in ('true', '1'):
            stem, dot, ext = name.rpartition('.')
            name = next(f'{stem} ({i}){dot}{ext}' for i in range(1, 10000)
                        if not fake.files.get(kind, subfolder, f'{stem} ({i}){dot}{ext}'))
        fake.files.put(kind, subfolder, name, upload.file.read())
        return json_response({'name': name, 'subfolder': subfolder, 'type': kind})

    routes(app, 'GET', '/view', view)
    routes(app, 'POST', '/upload/image', upload_image)


def add_websocket_route(app, fake):
    def websocket():
        """GET /ws?clientId=: status on connect, feature_flags answered, events after."""
        ws = bottle.request.environ.get('wsgi.websocket')
        if fake.scenario['ws_disabled']:
            if ws is not None:  # Upgraded before the hook could refuse it.
                ws.close()
                return ''
            return text_response('404: Not Found', 404)
        if ws is None:
            return text_response('No WebSocket UPGRADE hdr: None\n Can "Upgrade" only to '
                                 '"WebSocket".', 400)
        sid = bottle.request.query.get('clientId') or uuid.uuid4().hex
        serve_socket(fake, fake.sockets.add(sid, ws))
        return ''

    routes(app, 'GET', '/ws', websocket)


def serve_socket(fake, client):
    sid = client.sid
    try:
        fake.sockets.send('status', {'status': fake.exec_info(), 'sid': sid}, sid)
        if fake.state.client_id == sid and fake.state.last_node_id is not None:
            fake.sockets.send('executing', {'node': fake.state.last_node_id}, sid)
        first = True
        while (message := client.ws.receive()) is not None:
            first = handle_client_message(fake, sid, message, first)
    except Exception as ex:  # noqa: BLE001 - a broken socket just ends the session
        print(f'fake comfyui: socket {sid} ended: {ex!r}', file=sys.stderr)
    finally:
        fake.sockets.remove(client)


def handle_client_message(fake, sid, message, first):
    """Answer a first ``feature_flags`` message; whether the next message is still first."""
    if not isinstance(message, str):
        return first
    try:
        data = json.loads(message)
    except ValueError:
        return first
    if first and isinstance(data, dict) and data.get('type') == 'feature_flags':
        fake.sockets.send('feature_flags', FEATURES, sid)
    return False


def add_fake_routes(app, fake):
    def config():
        """POST /_fake/config: merge a JSON object into the scenario."""
        fake.configure(read_json())
        return json_response(fake.scenario)

    def reset():
        """POST /_fake/reset: defaults, empty queue, history, files and request log."""
        fake.reset()
        return json_response({'ok': True})

    app.route('/_fake/config', 'POST', config)
    app.route('/_fake/reset', 'POST', reset)
    app.route('/_fake/requests', 'GET', lambda: json_response(fake.requests))
    app.route('/_fake/state', 'GET', lambda: json_response(fake.snapshot()))


def add_hooks(app, fake):
    def before_request():
        if bottle.request.path.startswith('/_fake/'):
            return
        fake.record(bottle.request)
        if fake.scenario['down']:
            raise text_response('503 Service Unavailable', 503)

    def error_text(error):
        if error.status_code >= 500:
            print(f'fake comfyui: {error.body}\n{error.traceback}', file=sys.stderr)
            bottle.response.content_type = 'text/plain; charset=utf-8'
            return SERVER_ERROR
        bottle.response.content_type = 'text/plain; charset=utf-8'
        return f'{error.status_code}: {bottle.HTTP_CODES.get(error.status_code, "Error")}'

    app.add_hook('before_request', before_request)
    for code in (400, 404, 405, 500):
        app.error(code)(error_text)


def plain_http_hook(fake):
    """A geventwebsocket pre_start_hook: True skips the upgrade, so that /ws can
    answer 404 (ws_disabled) or 503 (down) instead of switching protocols."""
    def hook(handler):
        path = handler.environ.get('PATH_INFO', '')
        refused = fake.scenario['ws_disabled'] or fake.scenario['down']
        return refused and path in ('/ws', '/api/ws')
    return hook


def create_app():
    """A fresh WSGI app for one fake ComfyUI, its state and worker greenlet."""
    fake = FakeComfyUI()
    app = bottle.Bottle()
    for add in (add_info_routes, add_prompt_routes, add_queue_routes, add_file_routes,
                add_websocket_route, add_fake_routes, add_hooks):
        add(app, fake)
    hook = plain_http_hook(fake)

    def wsgi(environ, start_response):
        # WebSocketHandler upgrades before the app runs; its server's pre_start_hook
        # is the only way to refuse an upgrade, so install it on the first request.
        server = getattr(getattr(start_response, '__self__', None), 'server', None)
        if server is not None and getattr(server, 'pre_start_hook', None) is None:
            server.pre_start_hook = hook
        return app(environ, start_response)
    wsgi.fake = fake
    return wsgi
