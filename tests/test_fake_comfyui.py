"""The fake ComfyUI reproduces what a real ComfyUI 0.3.64 was seen to do.

Shapes come from /work/shared/research/comfyui-api.md; each test drives the
fake over HTTP and /ws, as the engine's adapter will.
"""

import io
import json
import time

import pytest
import requests
import websocket
from PIL import Image

MINIMAL_PIXEL = (127, 255, 127)  # red and blue blended 50 %, inverted
SERVER_ERROR = '500 Internal Server Error\n\nServer got itself in trouble'
DEFAULT_CHECKPOINTS = ['sd_xl_base_1.0.safetensors', 'pod-random-sd15.safetensors']


def sd_workflow(seed=8566257, steps=4, size=1024, prefix='pod/job-1',
                ckpt='sd_xl_base_1.0.safetensors'):
    """The stock text-to-image graph (script_examples/basic_api_example.py)."""
    return {
        '3': {'class_type': 'KSampler', 'inputs': {
            'cfg': 8, 'denoise': 1, 'latent_image': ['5', 0], 'model': ['4', 0],
            'negative': ['7', 0], 'positive': ['6', 0], 'sampler_name': 'euler',
            'scheduler': 'normal', 'seed': seed, 'steps': steps}},
        '4': {'class_type': 'CheckpointLoaderSimple', 'inputs': {'ckpt_name': ckpt}},
        '5': {'class_type': 'EmptyLatentImage',
              'inputs': {'batch_size': 1, 'height': size, 'width': size}},
        '6': {'class_type': 'CLIPTextEncode',
              'inputs': {'clip': ['4', 1], 'text': 'masterpiece best quality girl'}},
        '7': {'class_type': 'CLIPTextEncode', 'inputs': {'clip': ['4', 1], 'text': 'bad hands'}},
        '8': {'class_type': 'VAEDecode', 'inputs': {'samples': ['3', 0], 'vae': ['4', 2]}},
        '9': {'class_type': 'SaveImage',
              'inputs': {'filename_prefix': prefix, 'images': ['8', 0]}},
    }


def minimal_workflow(prefix='pod_probe', red=16711680):
    """EmptyImage x2 -> ImageBlend -> ImageInvert -> SaveImage, no model."""
    return {
        '1': {'class_type': 'EmptyImage',
              'inputs': {'width': 64, 'height': 64, 'batch_size': 1, 'color': red}},
        '2': {'class_type': 'EmptyImage',
              'inputs': {'width': 64, 'height': 64, 'batch_size': 1, 'color': 255}},
        '3': {'class_type': 'ImageBlend', 'inputs': {'image1': ['1', 0], 'image2': ['2', 0],
                                                    'blend_factor': 0.5, 'blend_mode': 'normal'}},
        '4': {'class_type': 'ImageInvert', 'inputs': {'image': ['3', 0]}},
        '5': {'class_type': 'SaveImage',
              'inputs': {'images': ['4', 0], 'filename_prefix': prefix}},
    }


class Socket:
    """A /ws client that keeps every message it reads."""

    def __init__(self, fake, client_id):
        url = fake.url.replace('http://', 'ws://') + f'/ws?clientId={client_id}'
        self.ws = websocket.create_connection(url, timeout=5)
        self.hello = json.loads(self.ws.recv())

    def read(self, timeout):
        self.ws.settimeout(timeout)
        return json.loads(self.ws.recv())

    def until_done(self, prompt_id, timeout=10):
        """Messages up to and including ``executing {"node": null}`` for the prompt."""
        messages, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.read(deadline - time.monotonic())
            messages.append(message)
            data = message['data']
            if message['type'] == 'executing' and data == {'node': None, 'prompt_id': prompt_id}:
                return messages
        raise AssertionError(f'no end for {prompt_id}: {messages}')

    def until(self, predicate, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.read(deadline - time.monotonic())
            if predicate(message):
                return message
        raise AssertionError('message never came')

    def drain(self, seconds=0.3):
        """Whatever arrives within ``seconds`` of silence."""
        messages = []
        while True:
            try:
                messages.append(self.read(seconds))
            except websocket.WebSocketTimeoutException:
                return messages

    def close(self):
        self.ws.close()


def post_prompt(fake, workflow, client_id=None, path='/prompt', **extra):
    body = {'prompt': workflow, **extra}
    if client_id is not None:
        body['client_id'] = client_id
    return requests.post(fake.url + path, json=body, timeout=5)


def submit(fake, workflow, client_id=None, **extra):
    response = post_prompt(fake, workflow, client_id, **extra)
    assert response.status_code == 200, response.text
    assert response.json()['node_errors'] == {}
    return response.json()['prompt_id']


def history(fake, prompt_id):
    return requests.get(f'{fake.url}/history/{prompt_id}', timeout=5).json()


def wait_history(fake, prompt_id, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = history(fake, prompt_id)
        if entry:
            return entry[prompt_id]
        time.sleep(0.02)
    raise AssertionError(f'{prompt_id} never reached history')


def view(fake, image):
    return requests.get(fake.url + '/view', params=image, timeout=5)


def png(response):
    return Image.open(io.BytesIO(response.content))


def state(fake):
    return requests.get(fake.url + '/_fake/state', timeout=5).json()


def kinds(messages, without=('progress_state',)):
    return [m['type'] for m in messages if m['type'] not in without]


@pytest.fixture
def fake(fakes):
    return fakes.start('comfyui', step_seconds=0.01)


# Successful run -------------------------------------------------------------


def test_sd_run_sends_events_to_its_client_only(fake):
    fake.configure(step_seconds=0.1)
    owner, other = Socket(fake, 'client-a'), Socket(fake, 'client-b')
    assert owner.hello == {'type': 'status', 'data': {
        'status': {'exec_info': {'queue_remaining': 0}}, 'sid': 'client-a'}}
    workflow = sd_workflow(steps=4)
    prompt_id = submit(fake, workflow, 'client-a')
    assert history(fake, prompt_id) == {}
    messages = owner.until_done(prompt_id)

    assert kinds(messages) == (['status', 'status', 'execution_start', 'execution_cached']
                               + ['executing'] * 5 + ['progress'] * 4 + ['executing'] * 2
                               + ['executed', 'execution_success', 'status', 'executing'])
    order = [m['data']['node'] for m in messages if m['type'] == 'executing'][:-1]
    assert sorted(order) == ['3', '4', '5', '6', '7', '8', '9']
    assert order.index('3') > max(order.index(n) for n in '4567')
    assert order[-2:] == ['8', '9']
    progress = [m['data'] for m in messages if m['type'] == 'progress']
    assert progress == [{'value': v, 'max': 4, 'prompt_id': prompt_id, 'node': '3'}
                        for v in (1, 2, 3, 4)]
    assert messages[-1] == {'type': 'executing', 'data': {'node': None, 'prompt_id': prompt_id}}
    states = [m['data'] for m in messages if m['type'] == 'progress_state']
    assert states and all(s['prompt_id'] == prompt_id for s in states)
    assert states[-1]['nodes']['9']['state'] == 'finished'
    image = {'filename': 'job-1_00001_.png', 'subfolder': 'pod', 'type': 'output'}
    executed = next(m['data'] for m in messages if m['type'] == 'executed')
    assert executed == {'node': '9', 'display_node': '9', 'output': {'images': [image]},
                        'prompt_id': prompt_id}
    assert set(kinds(other.drain(), without=())) == {'status'}

    entry = history(fake, prompt_id)[prompt_id]
    assert entry['prompt'] == [0, prompt_id, workflow, {'client_id': 'client-a'}, ['9']]
    assert entry['outputs'] == {'9': {'images': [image]}}
    assert entry['meta'] == {'9': {'node_id': '9', 'display_node': '9', 'parent_node': None,
                                   'real_node_id': '9'}}
    status = entry['status']
    assert (status['status_str'], status['completed']) == ('success', True)
    assert [m[0] for m in status['messages']] == ['execution_start', 'execution_cached',
                                                  'execution_success']
    assert all(m[1]['prompt_id'] == prompt_id and m[1]['timestamp'] for m in status['messages'])
    assert requests.get(f'{fake.url}/api/history/{prompt_id}', timeout=5).json() == {
        prompt_id: entry}

    response = view(fake, image)
    assert response.status_code == 200
    assert response.headers['Content-Type'] == 'image/png'
    assert response.headers['Content-Disposition'] == 'filename="job-1_00001_.png"'
    assert png(response).size == (1024, 1024)
    assert png(response).mode == 'RGB'


def test_identical_resubmit_is_cached_with_the_earlier_file(fake):
    client = Socket(fake, 'a')
    first = submit(fake, minimal_workflow(), 'a')
    client.until_done(first)
    first_image = wait_history(fake, first)['outputs']['5']['images'][0]
    assert first_image == {'filename': 'pod_probe_00001_.png', 'subfolder': '', 'type': 'output'}
    assert png(view(fake, first_image)).getpixel((0, 0)) == MINIMAL_PIXEL

    again = submit(fake, minimal_workflow(), 'a')
    messages = client.until_done(again)
    cached = next(m['data'] for m in messages if m['type'] == 'execution_cached')
    assert sorted(cached['nodes']) == ['1', '2', '3', '4', '5']
    assert [m for m in messages if m['type'] == 'executing' and m['data']['node']] == []
    executed = next(m['data'] for m in messages if m['type'] == 'executed')
    assert executed['output'] == {'images': [first_image]}
    assert wait_history(fake, again)['outputs'] == {'5': {'images': [first_image]}}
    assert state(fake)['files'] == ['pod_probe_00001_.png']

    changed = submit(fake, minimal_workflow(red=0x00FF00), 'a')
    messages = client.until_done(changed)
    cached = next(m['data'] for m in messages if m['type'] == 'execution_cached')
    assert sorted(cached['nodes']) == ['2']
    new_image = wait_history(fake, changed)['outputs']['5']['images'][0]
    assert new_image['filename'] == 'pod_probe_00002_.png'


def test_different_seeds_give_different_pixels(fake):
    pixels = []
    for seed in (1, 2):
        prompt_id = submit(fake, sd_workflow(seed=seed, steps=1, size=64, prefix=f's{seed}'))
        image = wait_history(fake, prompt_id)['outputs']['9']['images'][0]
        picture = png(view(fake, image))
        assert picture.size == (64, 64)
        pixels.append(picture.getpixel((0, 0)))
    assert pixels[0] != pixels[1]


# Validation -------------------------------------------------------------------


def without(workflow, node_id, key=None):
    workflow = json.loads(json.dumps(workflow))
    if key is None:
        del workflow[node_id]
    else:
        del workflow[node_id][key]
    return workflow


def drop_input(workflow, node_id, name):
    workflow = json.loads(json.dumps(workflow))
    del workflow[node_id]['inputs'][name]
    return workflow


def with_input(workflow, node_id, name, value):
    workflow = json.loads(json.dumps(workflow))
    workflow[node_id]['inputs'][name] = value
    return workflow


def error_body(kind, message, details, node_errors=None):
    return {'error': {'type': kind, 'message': message, 'details': details, 'extra_info': {}},
            'node_errors': node_errors or {}}


def width_error(error):
    return error_body('prompt_outputs_failed_validation', 'Prompt outputs failed validation', '', {
        '1': {'errors': [error], 'dependent_outputs': ['5'], 'class_type': 'EmptyImage'}})


def test_validation_errors_have_the_captured_400_bodies(fake):
    minimal = minimal_workflow()
    unknown = json.loads(json.dumps(minimal))
    unknown['4']['class_type'] = 'NoSuchNode'
    width_config = ['INT', {'default': 512, 'min': 1, 'max': 16384, 'step': 1}]
    not_int = "invalid literal for int() with base 10: 'abc'"
    cases = [
        (unknown, error_body('invalid_prompt',
                             'Cannot execute because node NoSuchNode does not exist.',
                             "Node ID '#4'")),
        (without(minimal, '4', 'class_type'), error_body(
            'invalid_prompt', 'Cannot execute because a node is missing the class_type property.',
            "Node ID '#4'")),
        (without(minimal, '5'), error_body('prompt_no_outputs', 'Prompt has no outputs', '')),
        (drop_input(minimal, '1', 'width'), width_error({
                'type': 'required_input_missing', 'message': 'Required input is missing',
                'details': 'width', 'extra_info': {'input_name': 'width'}})),
        (with_input(minimal, '1', 'width', 'abc'), width_error({
            'type': 'invalid_input_type',
            'message': 'Failed to convert an input value to a INT value',
            'details': f'width, abc, {not_int}',
            'extra_info': {'input_name': 'width', 'input_config': width_config,
                           'received_value': 'abc', 'exception_message': not_int}})),
        (with_input(minimal, '1', 'width', 0), width_error({
            'type': 'value_smaller_than_min', 'message': 'Value 0 smaller than min of 1',
            'details': 'width', 'extra_info': {'input_name': 'width', 'input_config': width_config,
                                               'received_value': 0}})),
        (with_input(minimal, '1', 'width', 99999), width_error({
            'type': 'value_bigger_than_max', 'message': 'Value 99999 bigger than max of 16384',
            'details': 'width', 'extra_info': {'input_name': 'width', 'input_config': width_config,
                                               'received_value': 99999}})),
    ]
    for workflow, expected in cases:
        response = post_prompt(fake, workflow, 'a')
        assert (response.status_code, response.json()) == (400, expected)
        assert response.headers['Content-Type'].startswith('application/json')

    response = requests.post(fake.url + '/prompt', json={'client_id': 'a'}, timeout=5)
    assert (response.status_code, response.json()) == (400, error_body(
        'no_prompt', 'No prompt provided', 'No prompt provided'))

    response = requests.post(fake.url + '/api/prompt', data='{not json', timeout=5)
    assert response.status_code == 500
    assert response.headers['Content-Type'].startswith('text/plain')
    assert response.text == SERVER_ERROR
    assert state(fake)['queue_pending'] == [] and state(fake)['history'] == []


def test_unknown_checkpoint_is_value_not_in_list(fake):
    stock = sd_workflow(ckpt='v1-5-pruned-emaonly.safetensors')
    for checkpoints in (DEFAULT_CHECKPOINTS, []):
        fake.configure(checkpoints=checkpoints)
        response = post_prompt(fake, stock, 'a')
        assert response.status_code == 400
        body = response.json()
        assert body['error'] == {'type': 'prompt_outputs_failed_validation',
                                 'message': 'Prompt outputs failed validation', 'details': '',
                                 'extra_info': {}}
        assert list(body['node_errors']) == ['4']
        node = body['node_errors']['4']
        assert (node['class_type'], node['dependent_outputs']) == ('CheckpointLoaderSimple', ['9'])
        error = node['errors'][0]
        assert error['type'] == 'value_not_in_list'
        assert error['message'] == 'Value not in list'
        assert error['details'] == (f"ckpt_name: 'v1-5-pruned-emaonly.safetensors' not in "
                                    f"{checkpoints}")
        assert error['extra_info']['input_name'] == 'ckpt_name'
        assert error['extra_info']['input_config'][0] == checkpoints
        assert error['extra_info']['received_value'] == 'v1-5-pruned-emaonly.safetensors'
        models = requests.get(fake.url + '/models/checkpoints', timeout=5).json()
        assert models == checkpoints


def test_link_to_a_missing_node_is_reported_under_the_linking_node(fake):
    workflow = with_input(minimal_workflow(), '4', 'image', ['99', 0])
    response = post_prompt(fake, workflow, 'a')
    assert response.status_code == 400
    body = response.json()
    assert body['error']['type'] == 'prompt_outputs_failed_validation'
    assert list(body['node_errors']) == ['4']
    node = body['node_errors']['4']
    assert (node['class_type'], node['dependent_outputs']) == ('ImageInvert', ['5'])
    error = node['errors'][0]
    assert (error['type'], error['message'], error['details']) == (
        'exception_during_inner_validation', 'Exception when validating inner node', "'99'")
    extra = error['extra_info']
    assert (extra['input_name'], extra['exception_type'], extra['linked_node']) == (
        'images', 'KeyError', ['4', 0])
    assert isinstance(extra['traceback'], list) and extra['traceback']


def test_one_invalid_branch_is_dropped_with_200(fake):
    workflow = minimal_workflow()
    workflow['6'] = {'class_type': 'EmptyImage',
                     'inputs': {'width': 0, 'height': 64, 'batch_size': 1, 'color': 0}}
    workflow['7'] = {'class_type': 'SaveImage',
                     'inputs': {'images': ['6', 0], 'filename_prefix': 'dropped'}}
    response = post_prompt(fake, workflow, 'a')
    assert response.status_code == 200
    body = response.json()
    assert list(body['node_errors']) == ['6']
    assert body['node_errors']['6']['dependent_outputs'] == ['7']
    assert body['node_errors']['6']['errors'][0]['type'] == 'value_smaller_than_min'
    entry = wait_history(fake, body['prompt_id'])
    assert list(entry['outputs']) == ['5']
    assert entry['prompt'][4] == ['5']
    assert entry['status']['status_str'] == 'success'


# Failures after a 200 ------------------------------------------------------


def test_runtime_errors_send_execution_error(fake):
    client = Socket(fake, 'a')
    fake.configure(fail_node_class='KSampler')
    prompt_id = submit(fake, sd_workflow(steps=2, size=64), 'a')
    messages = client.until_done(prompt_id)
    assert kinds(messages)[-3:] == ['execution_error', 'status', 'executing']
    assert 'progress' not in kinds(messages) and 'execution_success' not in kinds(messages)
    error = next(m['data'] for m in messages if m['type'] == 'execution_error')
    assert set(error) == {'prompt_id', 'node_id', 'node_type', 'executed', 'exception_message',
                          'exception_type', 'traceback', 'current_inputs', 'current_outputs',
                          'timestamp'}
    assert (error['prompt_id'], error['node_id'], error['node_type']) == (prompt_id, '3',
                                                                         'KSampler')
    assert error['exception_type'] == 'RuntimeError'
    assert sorted(error['executed']) == ['4', '5', '6', '7']
    assert len(error['traceback']) >= 5 and all(isinstance(t, str) for t in error['traceback'])
    inputs = error['current_inputs']
    assert inputs['seed'] == [8566257] and inputs['steps'] == [2]
    assert all(isinstance(value, list) for value in inputs.values())
    assert max(len(v[0]) for v in inputs.values() if isinstance(v[0], str)) > 1024
    assert sorted(error['current_outputs']) == ['3', '4', '5', '6', '7', '8', '9']

    entry = wait_history(fake, prompt_id)
    assert (entry['status']['status_str'], entry['status']['completed']) == ('error', False)
    assert entry['status']['messages'][-1] == ['execution_error', error]
    assert (entry['outputs'], entry['meta']) == ({}, {})

    fake.configure(fail_node_class=None, runtime_error_checkpoints=['broken.safetensors'])
    prompt_id = submit(fake, sd_workflow(steps=2, size=64, ckpt='broken.safetensors'), 'a')
    error = client.until(lambda m: m['type'] == 'execution_error')['data']
    assert (error['node_id'], error['node_type'], error['exception_type']) == (
        '4', 'CheckpointLoaderSimple', 'ValueError')
    assert error['current_inputs'] == {'ckpt_name': ['broken.safetensors']}
    assert wait_history(fake, prompt_id)['status']['status_str'] == 'error'


def test_interrupt_stops_the_running_prompt_at_the_next_step(fake):
    fake.configure(step_seconds=0.15)
    client = Socket(fake, 'a')
    prompt_id = submit(fake, sd_workflow(steps=30, size=64), 'a')
    client.until(lambda m: m['type'] == 'progress')
    response = requests.post(fake.url + '/interrupt', json={'prompt_id': 'not-running'}, timeout=5)
    assert (response.status_code, response.content) == (200, b'')
    client.until(lambda m: m['type'] == 'progress' and m['data']['value'] == 2)
    response = requests.post(fake.url + '/api/interrupt', json={'prompt_id': prompt_id},
                             timeout=5)
    assert (response.status_code, response.content) == (200, b'')
    messages = client.until_done(prompt_id, timeout=5)
    assert kinds(messages, without=('progress_state', 'progress')) == [
        'execution_interrupted', 'status', 'executing']
    interrupted = next(m['data'] for m in messages if m['type'] == 'execution_interrupted')
    assert set(interrupted) == {'prompt_id', 'node_id', 'node_type', 'executed', 'timestamp'}
    assert (interrupted['node_id'], interrupted['node_type']) == ('3', 'KSampler')
    assert sorted(interrupted['executed']) == ['4', '5', '6', '7']
    progress = [m['data']['value'] for m in messages if m['type'] == 'progress']
    assert len(progress) <= 2
    entry = wait_history(fake, prompt_id)
    assert (entry['status']['status_str'], entry['status']['completed']) == ('error', False)
    assert entry['status']['messages'][-1][0] == 'execution_interrupted'
    assert entry['outputs'] == {}
    assert state(fake)['interrupted'] == [prompt_id]


def test_deleted_pending_prompt_never_reaches_history(fake):
    fake.configure(queue_delay_seconds=0.6)
    kept = submit(fake, minimal_workflow('kept'))
    dropped = submit(fake, minimal_workflow('dropped'))
    queue = requests.get(fake.url + '/queue', timeout=5).json()
    assert queue['queue_running'] == []
    assert [item[1] for item in queue['queue_pending']] == [kept, dropped]
    assert queue['queue_pending'][0][:4] == [0, kept, minimal_workflow('kept'), {}]
    assert requests.get(fake.url + '/prompt', timeout=5).json() == {
        'exec_info': {'queue_remaining': 2}}
    response = requests.post(fake.url + '/queue', json={'delete': [dropped, 'unknown']},
                             timeout=5)
    assert (response.status_code, response.content) == (200, b'')
    pending = requests.get(fake.url + '/queue', timeout=5).json()['queue_pending']
    assert [item[1] for item in pending] == [kept]
    wait_history(fake, kept)
    time.sleep(0.1)
    assert history(fake, dropped) == {}
    snapshot = state(fake)
    assert (snapshot['history'], snapshot['deleted']) == ([kept], [dropped])


# WebSocket --------------------------------------------------------------------


def test_websocket_feature_flags_reconnect_and_client_less_prompts(fake):
    old = Socket(fake, 'a')
    old.ws.send(json.dumps({'type': 'feature_flags', 'data': {'supports_preview_metadata': True}}))
    assert old.read(5) == {'type': 'feature_flags', 'data': {
        'supports_preview_metadata': True, 'max_upload_size': 104857600}}
    new = Socket(fake, 'a')
    prompt_id = submit(fake, minimal_workflow(), 'a')
    assert kinds(new.until_done(prompt_id))[-1] == 'executing'
    assert set(kinds(old.drain(), without=())) <= {'status'}

    watcher = Socket(fake, 'b')
    prompt_id = submit(fake, minimal_workflow('anonymous'))
    wait_history(fake, prompt_id)
    assert set(kinds(watcher.drain(), without=())) == {'status', 'progress_state'}


def test_ws_drop_after_events_closes_the_socket(fake):
    fake.configure(ws_drop_after_events=4)
    client = Socket(fake, 'a')
    prompt_id = submit(fake, minimal_workflow(), 'a')
    received = [client.read(5) for _ in range(3)]
    assert [m['type'] for m in received][:2] == ['status', 'status']
    client.ws.settimeout(5)
    assert client.ws.recv() == ''  # the close frame
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        client.ws.recv()
    assert wait_history(fake, prompt_id)['status']['status_str'] == 'success'


# Other routes and scenario knobs ------------------------------------------


def test_info_routes(fake):
    stats = requests.get(fake.url + '/system_stats', timeout=5).json()
    assert stats['system']['comfyui_version'] == '0.3.64'
    assert stats['devices'][0]['type'] == 'cpu'
    assert requests.get(fake.url + '/api/object_info/NoSuchNode', timeout=5).json() == {}
    info = requests.get(fake.url + '/object_info/EmptyImage', timeout=5).json()
    assert info['EmptyImage']['input_order'] == {'required': ['width', 'height', 'batch_size',
                                                              'color']}
    assert info['EmptyImage']['output'] == ['IMAGE']
    assert requests.get(fake.url + '/api/models/checkpoints', timeout=5).json() == \
        DEFAULT_CHECKPOINTS
    for params, status in (({'filename': 'nope.png'}, 404), ({'filename': '../x.png'}, 400),
                           ({'filename': 'x.png', 'type': 'secret'}, 400)):
        response = requests.get(fake.url + '/view', params=params, timeout=5)
        assert (response.status_code, response.content) == (status, b'')


def test_scenario_knobs_and_request_log(fake):
    fake.configure(extra_node_classes={'PodUpscale': {'required': {'image': 'IMAGE'}}})
    workflow = minimal_workflow()
    workflow['6'] = {'class_type': 'PodUpscale', 'inputs': {'image': ['4', 0]}}
    workflow['5']['inputs']['images'] = ['6', 0]
    prompt_id = submit(fake, workflow, 'a', extra_data={'tag': 'pod'})
    assert wait_history(fake, prompt_id)['prompt'][3] == {'tag': 'pod', 'client_id': 'a'}
    logged = fake.requests('/prompt')[0]
    assert (logged['method'], logged['json']['client_id']) == ('POST', 'a')
    assert logged['headers']['Content-Type'] == 'application/json'

    fake.configure(image_size=[40, 30])
    prompt_id = submit(fake, sd_workflow(steps=1, prefix='small'))
    image = wait_history(fake, prompt_id)['outputs']['9']['images'][0]
    assert png(view(fake, image)).size == (40, 30)

    fake.configure(ws_disabled=True)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        Socket(fake, 'a')
    assert refused.value.status_code == 404
    fake.configure(ws_disabled=False, down=True)
    assert requests.get(fake.url + '/system_stats', timeout=5).status_code == 503
    fake.configure(down=False, system_stats_delay=0.5)
    with pytest.raises(requests.Timeout):
        requests.get(fake.url + '/system_stats', timeout=0.2)
    fake.reset()
    assert fake.requests() == [] and state(fake)['history'] == []


# Upscaling an uploaded image ------------------------------------------------


def upscale_workflow(image='art.png', model='RealESRGAN_x2.pth', prefix='pod/up'):
    """LoadImage -> UpscaleModelLoader + ImageUpscaleWithModel -> SaveImage."""
    return {
        '1': {'class_type': 'LoadImage', 'inputs': {'image': image}},
        '2': {'class_type': 'UpscaleModelLoader', 'inputs': {'model_name': model}},
        '3': {'class_type': 'ImageUpscaleWithModel',
              'inputs': {'upscale_model': ['2', 0], 'image': ['1', 0]}},
        '4': {'class_type': 'SaveImage', 'inputs': {'images': ['3', 0], 'filename_prefix': prefix}},
    }


def upload(fake, name, image):
    buffer = io.BytesIO()
    image.save(buffer, 'PNG')
    response = requests.post(fake.url + '/upload/image', timeout=5,
                             files={'image': (name, buffer.getvalue(), 'image/png')},
                             data={'type': 'input', 'overwrite': 'true'})
    assert response.status_code == 200, response.text
    return response.json()


def two_halves(size, left, right):
    image = Image.new('RGB', size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def test_an_uploaded_image_is_enlarged_by_the_models_scale(fake):
    assert upload(fake, 'art.png', two_halves((40, 30), (200, 10, 10), (10, 10, 200))) == \
        {'name': 'art.png', 'subfolder': '', 'type': 'input'}
    assert requests.get(fake.url + '/models/upscale_models', timeout=5).json() == \
        ['RealESRGAN_x2.pth', '4x-UltraSharp.pth']
    info = requests.get(fake.url + '/object_info/LoadImage', timeout=5).json()['LoadImage']
    assert info['input']['required']['image'] == [['art.png'], {'image_upload': True}]
    assert info['output'] == ['IMAGE', 'MASK']
    for model, scale in (('RealESRGAN_x2.pth', 2), ('4x-UltraSharp.pth', 4)):
        entry = wait_history(fake, submit(fake, upscale_workflow(model=model)))
        image = png(view(fake, entry['outputs']['4']['images'][0]))
        assert image.size == (40 * scale, 30 * scale)
        # The real pixels, enlarged: red on the left, blue on the right.
        assert image.getpixel((2, 2))[:3] == (200, 10, 10)
        assert image.getpixel((image.width - 3, 2))[:3] == (10, 10, 200)


def test_a_re_uploaded_image_runs_again_instead_of_the_cache(fake):
    upload(fake, 'art.png', Image.new('RGB', (16, 16), (255, 0, 0)))
    first = wait_history(fake, submit(fake, upscale_workflow()))
    upload(fake, 'art.png', Image.new('RGB', (16, 16), (0, 255, 0)))
    second = wait_history(fake, submit(fake, upscale_workflow()))
    assert png(view(fake, first['outputs']['4']['images'][0])).getpixel((0, 0))[:3] == (255, 0, 0)
    assert png(view(fake, second['outputs']['4']['images'][0])).getpixel((0, 0))[:3] == (0, 255, 0)


def test_a_missing_image_or_model_fails_validation(fake):
    response = post_prompt(fake, upscale_workflow(image='gone.png'))
    assert response.status_code == 400
    errors = response.json()['node_errors']['1']['errors']
    assert errors == [{'type': 'custom_validation_failed',
                       'message': 'Custom validation failed for node',
                       'details': 'image - Invalid image file: gone.png',
                       'extra_info': {'input_name': 'image'}}]
    upload(fake, 'art.png', Image.new('RGB', (8, 8)))
    response = post_prompt(fake, upscale_workflow(model='8x-Nothing.pth'))
    assert response.status_code == 400
    error = response.json()['node_errors']['2']['errors'][0]
    assert (error['type'], error['details']) == (
        'value_not_in_list',
        "model_name: '8x-Nothing.pth' not in ['RealESRGAN_x2.pth', '4x-UltraSharp.pth']")


def test_a_file_that_is_no_image_fails_when_it_loads(fake):
    response = requests.post(fake.url + '/upload/image', timeout=5,
                             files={'image': ('art.png', b'not a png', 'image/png')})
    assert response.status_code == 200
    entry = wait_history(fake, submit(fake, upscale_workflow()))
    assert entry['status']['status_str'] == 'error'
    error = dict(entry['status']['messages'])['execution_error']
    assert error['exception_type'] == 'PIL.UnidentifiedImageError'
    assert error['exception_message'] == "cannot identify image file '/ComfyUI/input/art.png'\n"
