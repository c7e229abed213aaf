"""The ComfyUI backend against the fake ComfyUI (tests/fakes/comfyui.py)."""

import json
import time

import pytest
import requests
from PIL import Image

from test_events import Recorder, socketio_client


def comfy_engine(engines, *fakes_, **env):
    urls = ','.join(fake.url for fake in fakes_)
    settings = {'COMFYUI_URL': urls, 'COMFYUI_STEPS': 6, 'CUSTOM_HANDLERS': 'testkit', **env}
    return engines.start(**settings)


def generate(engine, prompt='A lighthouse in a storm', **extra):
    return engine.submit({'prompt': prompt, 'productTypes': ['tshirt'], **extra},
                         path='/api/generate')


def prompts_sent(fake):
    return [r['json'] for r in fake.requests('/prompt') if r['method'] == 'POST']


def fake_state(fake):
    return requests.get(f'{fake.url}/_fake/state', timeout=5).json()


def assert_interrupted(fake, prompt_id, timeout=10):
    """The engine asked to interrupt this prompt, and the GPU stopped it
    (at its next sampler step, as ComfyUI does)."""
    asked = [r['json'] for r in fake.requests('/interrupt')]
    assert {'prompt_id': prompt_id} in asked, asked
    deadline = time.monotonic() + timeout
    while prompt_id not in fake_state(fake)['interrupted']:
        assert time.monotonic() < deadline, fake_state(fake)
        time.sleep(0.05)


def test_a_design_from_comfyui_with_live_progress(engines, fakes):
    fake = fakes.start('comfyui', step_seconds=0.05)
    engine = comfy_engine(engines, fake)
    info = engine.get('/api/info').json()['config']
    assert info['imageBackend'].startswith('comfyui')
    recorder = Recorder()
    client = socketio_client(engine, recorder)
    try:
        job_id = generate(engine, seed=1234)
        job = engine.wait_for(job_id, 'completed', timeout=30)
        recorder.drain()
    finally:
        client.disconnect()
    [image] = job['result']['generatedImages']
    assert image['backend'] == 'comfyui' and image['source'] == {'width': 1024, 'height': 1024}
    assert (image['width'], image['height']) == (4500, 5400)
    with Image.open(engine.data_dir / image['path']) as png:
        assert png.size == (4500, 5400) and round(png.info['dpi'][0]) == 300
    [sent] = prompts_sent(fake)
    workflow = sent['prompt']
    assert sent['client_id'].startswith('pod-engine-')
    assert workflow['6']['inputs']['text'] == 'A lighthouse in a storm'
    assert workflow['3']['inputs']['seed'] == 1234 and workflow['3']['inputs']['steps'] == 6
    assert isinstance(workflow['3']['inputs']['cfg'], float)
    assert job_id in workflow['9']['inputs']['filename_prefix']
    progress = [d['progress'] for d in recorder.of('job:progress', job_id)]
    during_sampling = [p for p in progress if 0 < p < 50]
    assert len(during_sampling) >= 3, progress  # sampler steps moved the bar
    assert progress == sorted(progress)


def test_the_socket_can_be_missing(engines, fakes):
    fake = fakes.start('comfyui', ws_disabled=True)
    engine = comfy_engine(engines, fake)
    job = engine.wait_for(generate(engine), 'completed', timeout=30)
    assert job['result']['generatedImages'][0]['backend'] == 'comfyui'
    assert fake.requests('/history')  # it was polled


def test_the_socket_dropping_mid_run_does_not_lose_the_image(engines, fakes):
    fake = fakes.start('comfyui', ws_drop_after_events=4, step_seconds=0.05)
    engine = comfy_engine(engines, fake)
    engine.wait_for(generate(engine), 'completed', timeout=30)


def test_same_prompt_twice_never_returns_the_earlier_file(engines, fakes):
    fake = fakes.start('comfyui')
    engine = comfy_engine(engines, fake)
    first = engine.wait_for(generate(engine, seed=7), 'completed', timeout=30)
    second = engine.wait_for(generate(engine, seed=7), 'completed', timeout=30)
    prefixes = [p['prompt']['9']['inputs']['filename_prefix'] for p in prompts_sent(fake)]
    assert prefixes[0] != prefixes[1]
    files = fake_state(fake)['files']
    assert len(files) == 2
    assert first['result']['generatedImages'][0]['path'] != \
        second['result']['generatedImages'][0]['path']


def test_count_runs_one_prompt_per_design_each_with_its_seed(engines, fakes):
    fake = fakes.start('comfyui')
    engine = comfy_engine(engines, fake)
    job = engine.wait_for(generate(engine, count=3, seed=100), 'completed', timeout=60)
    seeds = sorted(p['prompt']['3']['inputs']['seed'] for p in prompts_sent(fake))
    assert seeds == [100, 101, 102]
    assert len(job['result']['generatedImages']) == 3


# Errors ------------------------------------------------------------------------------

def test_a_missing_checkpoint_fails_at_once_naming_the_node(engines, fakes):
    fake = fakes.start('comfyui', checkpoints=['other.safetensors'])
    engine = comfy_engine(engines, fake)
    job = engine.wait_for(generate(engine), 'failed', timeout=30)
    assert job['retryCount'] == 0
    assert 'node 4 (CheckpointLoaderSimple)' in job['error']
    assert 'sd_xl_base_1.0.safetensors' in job['error']


def test_a_runtime_error_fails_at_once_trimmed(engines, fakes):
    fake = fakes.start('comfyui', fail_node_class='KSampler')
    engine = comfy_engine(engines, fake)
    job = engine.wait_for(generate(engine), 'failed', timeout=30)
    assert job['retryCount'] == 0
    assert 'node 3 (KSampler)' in job['error'] and 'RuntimeError' in job['error']
    assert len(job['error']) < 700
    everything = json.dumps(job) + engine.log()
    assert 'tensor(' not in everything and 'Traceback' not in everything
    assert '"class_type"' not in engine.log()  # no workflow dumped into the log


def test_a_partly_rejected_workflow_fails(engines, fakes, tmp_path):
    workflow = json.loads((__import__('pathlib').Path(__file__).parent.parent /
                           'adapters/workflows/sdxl_txt2img.json').read_text())
    workflow['20'] = {'class_type': 'EmptyImage',
                      'inputs': {'width': 0, 'height': 64, 'batch_size': 1, 'color': 0}}
    workflow['21'] = {'class_type': 'SaveImage',
                      'inputs': {'images': ['20', 0], 'filename_prefix': 'extra'}}
    path = tmp_path / 'two-outputs.json'
    path.write_text(json.dumps(workflow))
    fake = fakes.start('comfyui')
    engine = comfy_engine(engines, fake, COMFYUI_WORKFLOW=path)
    job = engine.wait_for(generate(engine), 'failed', timeout=30)
    assert job['retryCount'] == 0 and 'node 20 (EmptyImage)' in job['error']


def test_a_server_that_is_down_is_retried_later(engines, fakes):
    fake = fakes.start('comfyui', down=True)
    engine = comfy_engine(engines, fake, RETRY_DELAY_MS=300)
    response = engine.get('/health')
    assert response.status_code == 503 and response.json()['services']['comfyui'] is False
    job_id = generate(engine)
    engine.wait_for(job_id, 'pending', where=lambda j: j['retryCount'] >= 1, timeout=20)
    fake.configure(down=False)
    job = engine.wait_for(job_id, 'completed', timeout=30)
    assert job['retryCount'] >= 1


def test_images_smaller_than_min_source_px_are_refused(engines, fakes):
    fake = fakes.start('comfyui', image_size=512)
    engine = comfy_engine(engines, fake)
    job = engine.wait_for(generate(engine), 'failed', timeout=30)
    assert '512x512' in job['error'] and job['retryCount'] == 0


# Cancel and timeout stop the GPU ---------------------------------------------------

def test_cancel_while_queued_deletes_the_prompt(engines, fakes):
    fake = fakes.start('comfyui', queue_delay_seconds=30)
    engine = comfy_engine(engines, fake)
    job_id = generate(engine)
    deadline = time.monotonic() + 10
    while not fake_state(fake)['queue_pending']:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    engine.post(f'/api/jobs/{job_id}/cancel')
    [prompt_id] = [p['prompt_id'] for p in prompts_sent(fake)]
    state = fake_state(fake)
    assert prompt_id in state['deleted'] and not state['queue_pending']


def test_cancel_while_running_interrupts_it(engines, fakes):
    fake = fakes.start('comfyui', step_seconds=1.0)
    engine = comfy_engine(engines, fake)
    job_id = generate(engine)
    deadline = time.monotonic() + 10
    while not fake_state(fake)['queue_running']:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    engine.post(f'/api/jobs/{job_id}/cancel')
    [prompt_id] = [p['prompt_id'] for p in prompts_sent(fake)]
    assert_interrupted(fake, prompt_id)
    assert engine.job(job_id)['status'] == 'cancelled'


def test_timeout_interrupts_the_prompt(engines, fakes):
    fake = fakes.start('comfyui', step_seconds=1.0)
    engine = comfy_engine(engines, fake, JOB_TIMEOUT_MS=1500)
    job_id = engine.submit({'prompt': 'slow', 'productTypes': ['tshirt'], 'maxRetries': 0},
                           path='/api/generate')
    job = engine.wait_for(job_id, 'failed', timeout=20)
    assert job['error'] == 'Job timeout'
    [prompt_id] = [p['prompt_id'] for p in prompts_sent(fake)]
    assert_interrupted(fake, prompt_id)


# Several servers ---------------------------------------------------------------------

def test_two_servers_share_a_batch(engines, fakes):
    first = fakes.start('comfyui', step_seconds=0.1)
    second = fakes.start('comfyui', step_seconds=0.1)
    engine = comfy_engine(engines, first, second, MAX_CONCURRENT_JOBS=4)
    ids = [generate(engine, prompt=f'design {n}') for n in range(4)]
    for job_id in ids:
        engine.wait_for(job_id, 'completed', timeout=60)
    assert len(prompts_sent(first)) >= 1 and len(prompts_sent(second)) >= 1
    assert len(prompts_sent(first)) + len(prompts_sent(second)) == 4
    details = engine.get('/health').json()['details']['comfyui']
    assert [d['up'] for d in details] == [True, True]


def test_a_server_going_down_mid_batch_hands_over(engines, fakes):
    first = fakes.start('comfyui', step_seconds=0.05)
    second = fakes.start('comfyui', step_seconds=0.05)
    engine = comfy_engine(engines, first, second, HEALTH_CHECK_INTERVAL_MS=200)
    job_id = engine.submit({'items': [{'prompt': f'item {n}', 'productTypes': ['tshirt']}
                                      for n in range(4)]}, path='/api/generate/batch')
    engine.wait_for(job_id, 'running', where=lambda j: j['progress'] >= 25, timeout=60)
    first.kill9()
    job = engine.wait_for(job_id, 'completed', timeout=90)
    assert job['result']['errors'] == []
    health = engine.get('/health').json()
    assert health['services']['comfyui'] is True
    assert [d['up'] for d in health['details']['comfyui']] == [False, True]


# Start-up checks and the custom handler ------------------------------------------------

@pytest.mark.parametrize('workflow, message', [
    ({'1': {'class_type': 'SaveImage', 'inputs': {'images': ['2', 0]}}}, '{{prompt}}'),
    ({'1': {'class_type': 'CLIPTextEncode', 'inputs': {'text': '{{prompt}}'}}}, 'output node'),
    ([1, 2], 'API-format'),
])
def test_a_bad_workflow_file_stops_start_up(engines, tmp_path, workflow, message):
    path = tmp_path / 'workflow.json'
    path.write_text(json.dumps(workflow))
    engine = engines.start(expect_ready=False, COMFYUI_URL='http://127.0.0.1:9',
                           COMFYUI_WORKFLOW=path)
    assert engine.wait_exit() == 2
    assert 'COMFYUI_WORKFLOW' in engine.log() and message in engine.log()


MINIMAL = {
    '1': {'class_type': 'EmptyImage', 'inputs': {'width': '{{width}}', 'height': '{{height}}',
                                                 'batch_size': 1, 'color': 16711680}},
    '2': {'class_type': 'SaveImage', 'inputs': {'images': ['1', 0],
                                                'filename_prefix': '{{filename_prefix}}'}},
}


def test_comfyui_workflow_handler_runs_the_request_workflow(engines, fakes):
    fake = fakes.start('comfyui')
    engine = comfy_engine(engines, fake)
    job_id = engine.submit({'type': 'custom', 'request': {
        'handler': 'comfyui_workflow', 'workflow': MINIMAL,
        'inputs': {'width': 1200, 'height': 1400}, 'productTypes': ['hoodie'],
        'title': 'Plain Red'}})
    job = engine.wait_for(job_id, 'completed', timeout=30)
    [image] = job['result']['generatedImages']
    assert image['source'] == {'width': 1200, 'height': 1400}
    [product] = job['result']['products']
    assert product['type'] == 'hoodie' and product['title'] == 'Plain Red'
    [sent] = prompts_sent(fake)
    assert sent['prompt']['1']['inputs']['width'] == 1200


@pytest.mark.parametrize('request_body, message', [
    ({'workflow': {'1': {'inputs': {}}}}, 'request.workflow'),
    ({'workflow': MINIMAL, 'inputs': {'colour': 1}}, 'request.inputs.colour'),
    ({'workflow': MINIMAL, 'inputs': {'width': 'wide'}}, 'request.inputs.width'),
])
def test_comfyui_workflow_requests_are_checked_at_submit(engine, request_body, message):
    response = engine.post('/api/jobs', json={'type': 'custom', 'request': {
        'handler': 'comfyui_workflow', **request_body}})
    assert response.status_code == 400 and message in response.json()['error']
