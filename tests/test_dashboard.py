"""The browser dashboard (web/, served at GET /) in real headless Chromium.

Playwright drives Debian's ``chromium`` (never a downloaded browser):
./run-tests.sh installs it when it is missing and it can (root with apt-get).
Without it, or without the ``playwright`` package, these tests skip and say
why. Every test watches the page: a JavaScript error, a failed request, an
HTTP error or a console error fails it.
"""

import os
import re
import shutil
import time
from pathlib import Path

import pytest
import requests

from test_jobs import sleep_job

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the skip message says what to do
    sync_playwright = None

CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run',
                 '--disable-dev-shm-usage']
FAST_DESIGNS = {'CUSTOM_HANDLERS': 'testkit', 'IMAGE_BACKEND': 'tiny', 'MIN_SOURCE_PX': 1000}


def chromium_path():
    for candidate in (os.environ.get('CHROMIUM_PATH'), '/usr/bin/chromium',
                      shutil.which('chromium'), shutil.which('chromium-browser')):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope='module')
def browser():
    if sync_playwright is None:
        pytest.skip('the playwright package is not installed: '
                    '.venv/bin/pip install -r requirements-dev.txt')
    path = chromium_path()
    if path is None:
        pytest.skip('Chromium is not installed: run ./run-tests.sh as root (it installs '
                    "Debian's chromium) or apt-get install chromium, or set CHROMIUM_PATH")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Dashboard:
    """One browser page on an engine's dashboard, recording anything that went wrong."""

    def __init__(self, browser, engine, tmp_path, width=1400, height=900):
        self.engine = engine
        self.tmp_path = tmp_path
        self.context = browser.new_context(viewport={'width': width, 'height': height})
        self.page = self.context.new_page()
        self.problems = []
        self.page.on('pageerror', lambda error: self.problems.append(f'page error: {error}'))
        self.page.on('console', self._console)
        self.page.on('requestfailed', lambda request: self.problems.append(
            f'request failed: {request.method} {request.url} {request.failure}'))
        self.page.on('response', lambda response: response.status >= 400 and self.problems.append(
            f'HTTP {response.status}: {response.request.method} {response.url}'))

    def _console(self, message):
        if message.type == 'error':
            self.problems.append(f'console error: {message.text}')

    def open(self, ready=True):
        self.page.goto(self.engine.url + '/')
        if ready:
            self.page.wait_for_selector('html[data-ready]', timeout=10000)
        return self.page

    def row(self, job_id):
        return self.page.locator(f'tr.job-row[data-id="{job_id}"]')

    def wait_image(self, locator):
        """Wait until the image has loaded (a decoded picture, not a broken icon)."""
        locator.wait_for(state='attached')
        self.page.wait_for_function('img => img.complete && img.naturalWidth > 0',
                                    arg=locator.element_handle(), timeout=15000)

    def screenshot(self, name):
        path = self.tmp_path / name
        self.page.screenshot(path=str(path), animations='disabled')
        assert path.stat().st_size > 10000
        return path

    def close(self, allow=()):
        problems = [p for p in self.problems if not any(re.search(a, p) for a in allow)]
        self.context.close()
        assert not problems, '\n'.join(problems)


@pytest.fixture
def dashboards(browser, tmp_path):
    opened = []

    def open_dashboard(engine, **size):
        dashboard = Dashboard(browser, engine, tmp_path, **size)
        opened.append(dashboard)
        return dashboard
    yield open_dashboard
    for dashboard in opened:
        if not dashboard.context.pages:  # closed (and checked) by the test
            continue
        dashboard.context.close()


def test_submit_follow_cancel_and_retry_jobs_from_the_page(engines, dashboards, tmp_path):
    engine = engines.start(MAX_CONCURRENT_JOBS=1, METRICS_INTERVAL_MS=500, **FAST_DESIGNS)
    dashboard = dashboards(engine)
    page = dashboard.open()
    expect(page.locator('#health')).to_have_attribute('data-status', 'healthy')
    expect(page.locator('#conn')).to_have_attribute('data-state', 'live')
    expect(page.locator('#jobs-empty')).to_be_visible()

    # Submit a generate job from the form; its text goes in as text, not HTML.
    prompt = 'A fox <b>in</b> a paper boat <img src=x onerror=alert(1)>'
    page.fill('#g-prompt', prompt)
    page.click('#generate-form button[type="submit"]')
    row = page.locator('tr.job-row').first
    expect(row.locator('.job-title')).to_have_text(prompt)
    assert row.locator('.job-title b, .job-title img').count() == 0
    job_id = row.get_attribute('data-id')
    row = dashboard.row(job_id)  # `first` would follow newer jobs
    assert engine.job(job_id)['request'] == {'prompt': prompt, 'productTypes': ['tshirt'],
                                              'count': 1, 'autoPublish': True}
    expect(row).to_have_attribute('data-status', 'completed', timeout=30000)
    expect(row.locator('.pct')).to_have_text('100%')
    thumb = row.locator('.job-thumb img')
    expect(thumb).to_have_attribute('src', re.compile(r'^thumbs/designs/.+\.png\?w=\d+$'))
    dashboard.wait_image(thumb)
    # The design card: its thumbnail (a small one) and its product with the mockup.
    card = page.locator('#designs .design').first
    dashboard.wait_image(card.locator('.art img'))
    size = card.locator('.art img').evaluate('img => [img.naturalWidth, img.naturalHeight]')
    assert size[0] <= 256 and size[1] <= 512
    product = card.locator('a.chip')
    expect(product).to_have_count(1)
    expect(product).to_have_text('tshirt')
    assert product.get_attribute('href').endswith('/product.json')
    dashboard.wait_image(product.locator('img'))
    expect(page.locator('[data-metric="completed"] .value')).to_have_text('1')

    # A running job's bar moves with job:progress; a pending one behind it is cancelled.
    running = engine.submit(sleep_job(2))
    pending = engine.submit(sleep_job(30))
    expect(dashboard.row(running)).to_have_attribute('data-status', 'running')
    page.wait_for_function(f'''() => {{
        const bar = document.querySelector('tr[data-id="{running}"] .bar');
        return bar && Number(bar.getAttribute('aria-valuenow')) >= 30; }}''', timeout=5000)
    expect(dashboard.row(pending)).to_have_attribute('data-status', 'pending')
    expect(page.locator('[data-metric="pending"] .value')).to_have_text('1')
    dashboard.row(pending).locator('[data-action="cancel"]').click()
    expect(dashboard.row(pending)).to_have_attribute('data-status', 'cancelled')
    expect(dashboard.row(pending).locator('[data-action="retry"]')).to_be_visible()
    assert engine.job(pending)['status'] == 'cancelled'

    # A failed job is retried from its row (flaky fails once, then succeeds).
    flaky = engine.submit({'type': 'custom', 'request': {'handler': 'flaky', 'failTimes': 1},
                           'maxRetries': 0})
    expect(dashboard.row(flaky)).to_have_attribute('data-status', 'failed', timeout=15000)
    dashboard.row(flaky).locator('[data-action="retry"]').click()
    expect(dashboard.row(flaky)).to_have_attribute('data-status', 'completed', timeout=15000)
    assert engine.job(flaky)['result'] == {'attempts': 2}

    # Filters.
    page.click('[data-filter="cancelled"]')
    expect(page.locator('tr.job-row')).to_have_count(1)
    expect(page.locator('tr.job-row')).to_have_attribute('data-id', pending)
    page.click('[data-filter="all"]')
    expect(page.locator('tr.job-row')).to_have_count(4)

    dashboard.screenshot('dashboard.png')

    # The detail view: request, logs, result with the design and its product.
    row.click()
    detail = page.locator('#detail')
    expect(detail).to_be_visible()
    expect(page.locator('#detail-status')).to_have_text('completed')
    expect(detail.locator('pre.json').last).to_contain_text('"productTypes"')
    expect(detail.locator('#detail-logs')).to_contain_text('Job completed successfully')
    expect(detail.locator('.product-table tbody tr')).to_have_count(1)
    dashboard.wait_image(detail.locator('.detail-designs .art img'))
    dashboard.wait_image(detail.locator('.product-table img'))
    dashboard.screenshot('dashboard-detail.png')
    page.keyboard.press('Escape')
    expect(detail).to_be_hidden()

    # Cleanup of every finished job empties the list.
    page.select_option('#cleanup-age', '0')
    page.click('#cleanup-form button[type="submit"]')
    expect(page.locator('tr.job-row')).to_have_count(0)
    expect(page.locator('#toasts')).to_contain_text('Removed 4 finished jobs')
    assert engine.get('/api/jobs').json() == []

    dashboard.close()


def test_the_page_asks_for_the_api_key_once(engines, dashboards):
    key = 'dashboard-test-key'
    engine = engines.start(POD_API_KEY=key, **FAST_DESIGNS)
    dashboard = dashboards(engine)
    page = dashboard.open(ready=False)
    dialog = page.locator('#key-dialog')
    expect(dialog).to_be_visible()
    page.fill('#key-input', 'not-the-key')
    page.click('#key-form button[type="submit"]')
    expect(dialog.locator('.form-error')).to_have_text('That key was not accepted.')
    page.fill('#key-input', key)
    page.click('#key-form button[type="submit"]')
    expect(dialog).to_be_hidden()
    page.wait_for_selector('html[data-ready]')
    expect(page.locator('#conn')).to_have_attribute('data-state', 'live')
    expect(page.locator('#health')).to_have_attribute('data-status', 'healthy')
    expect(page.locator('[data-metric="pending"] .value')).to_have_text('0')

    # Events arrive over the keyed WebSocket; actions send the key.
    response = engine.post('/api/jobs', json=sleep_job(30), headers={'X-API-Key': key})
    job_id = response.json()['jobId']
    expect(dashboard.row(job_id)).to_have_attribute('data-status', 'running')
    dashboard.row(job_id).locator('[data-action="cancel"]').click()
    expect(dashboard.row(job_id)).to_have_attribute('data-status', 'cancelled')

    # Once per session: a reload does not ask again.
    page.reload()
    page.wait_for_selector('html[data-ready]')
    expect(dialog).to_be_hidden()
    expect(dashboard.row(job_id)).to_have_attribute('data-status', 'cancelled')
    expect(page.locator('#conn')).to_have_attribute('data-state', 'live')
    dashboard.close()


def test_an_unhealthy_engine_is_shown_without_a_console_error(engines, dashboards):
    engine = engines.start(HEALTH_MIN_SAMPLE=2, **FAST_DESIGNS)
    failing = {'type': 'custom', 'request': {'handler': 'fail'}, 'maxRetries': 0}
    for job_id in [engine.submit(failing) for _ in range(2)]:
        engine.wait_for(job_id, 'failed')
    assert engine.get('/health').status_code == 503  # what a load balancer sees
    dashboard = dashboards(engine)
    page = dashboard.open()
    pill = page.locator('#health')
    expect(pill).to_have_attribute('data-status', 'unhealthy')
    expect(pill).to_have_text('Unhealthy')
    expect(pill).to_have_attribute(
        'title', re.compile('2 of the 2 jobs finished in the last 15 min failed'))
    # It stays so through the page's own refreshes (a job event re-reads health).
    engine.wait_for(engine.submit(failing), 'failed')
    expect(page.locator('tr.job-row')).to_have_count(3)
    expect(pill).to_have_attribute('title', re.compile('3 of the 3 jobs'))
    dashboard.close()


def test_the_page_reconnects_when_the_engine_comes_back(engines, dashboards):
    engine = engines.start(CUSTOM_HANDLERS='testkit')
    dashboard = dashboards(engine)
    page = dashboard.open()
    expect(page.locator('#conn')).to_have_attribute('data-state', 'live')
    port = engine.url.rsplit(':', 1)[1]
    engine.stop()
    expect(page.locator('#conn')).to_have_attribute('data-state', 'reconnecting')

    again = engines.start(data_dir=engine.data_dir, CUSTOM_HANDLERS='testkit', PORT=port)
    expect(page.locator('#conn')).to_have_attribute('data-state', 'live', timeout=15000)
    job_id = again.submit(sleep_job(0.3))
    expect(dashboard.row(job_id)).to_have_attribute('data-status', 'completed')
    # While the engine was away the socket and the health poll could not connect.
    dashboard.close(allow=[r'WebSocket connection to .* failed', r'ERR_CONNECTION_REFUSED'])


def test_hundreds_of_jobs_stay_usable(engines, dashboards):
    engine = engines.start(CUSTOM_HANDLERS='testkit', MAX_CONCURRENT_JOBS=8)
    session = requests.Session()
    ids = []
    for _ in range(260):
        response = session.post(engine.url + '/api/jobs', json=sleep_job(0), timeout=10)
        ids.append(response.json()['jobId'])
    engine.wait_for(ids[-1], 'completed')
    dashboard = dashboards(engine)
    page = dashboard.open()
    rows = page.locator('tr.job-row')
    expect(rows).to_have_count(200)  # the newest page only
    assert rows.first.get_attribute('data-id') == ids[-1]
    page.click('#load-more')
    expect(rows).to_have_count(260)
    expect(page.locator('#load-more')).to_be_hidden()

    # A burst of events while the page is open: each becomes a row at the top, promptly.
    started = time.monotonic()
    burst = [session.post(engine.url + '/api/jobs', json=sleep_job(0.05), timeout=10).json()['jobId']
             for _ in range(60)]
    expect(dashboard.row(burst[-1])).to_have_attribute('data-status', 'completed', timeout=20000)
    expect(rows).to_have_count(320)
    assert rows.first.get_attribute('data-id') == burst[-1]
    assert time.monotonic() - started < 20

    page.fill('#search', burst[7])
    expect(rows).to_have_count(1)
    page.fill('#search', '')
    page.click('[data-filter="running"]')
    expect(rows).to_have_count(0)
    expect(page.locator('#jobs-empty')).to_have_text('No jobs match.')
    dashboard.close()


def test_a_design_under_the_dpi_floor_wears_a_badge(engines, dashboards, fakes):
    comfy = fakes.start('comfyui', picture='subject')
    engine = engines.start(COMFYUI_URL=comfy.url, COMFYUI_STEPS=2)
    job_id = engine.submit({'prompt': 'A lighthouse', 'productTypes': ['tshirt']},
                           path='/api/generate')
    dpi = engine.wait_for(job_id, 'completed', timeout=60)['result']['designs'][0]['print'][
        'effectiveDpi']
    dashboard = dashboards(engine)
    page = dashboard.open()
    card = page.locator(f'#designs article.design[data-job-id="{job_id}"]')
    badge = card.locator('.print-warning')
    expect(badge).to_have_text(f'⚠ {dpi} DPI')
    expect(badge).to_be_visible()
    box, art = badge.bounding_box(), card.locator('button.art').bounding_box()
    assert art['x'] <= box['x'] and box['x'] + box['width'] <= art['x'] + art['width']
    expect(badge).to_have_attribute('title', re.compile('under PRINT_MIN_DPI 150'))
    card.locator('button.art').click()
    facts = page.locator('.detail-designs .print-facts')
    expect(facts).to_have_text(re.compile(
        rf'^chest · {dpi} DPI · background removed \(\d+%\)( · tshirt: not in \w.*)?$'))
    dashboard.close()


def test_a_printify_design_shows_its_mockups_instead_of_the_flat_art(engines, dashboards, fakes):
    printify = fakes.start('printify', mockup_seconds=0)
    engine = engines.start(PRINTIFY_API_URL=printify.url, PRINTIFY_API_TOKEN='test-printify-token',
                           PRINTIFY_MOCKUP_WAIT_MS=0, PRINTIFY_SYNC_POLL_MS=200, **FAST_DESIGNS)
    job_id = engine.submit({'prompt': 'A lighthouse', 'productTypes': ['tshirt']},
                           path='/api/generate')
    job = engine.wait_for(job_id, 'completed', timeout=60, where=lambda job: all(
        p.get('mockupsFinal') for p in job['result']['products']))
    [product] = job['result']['products']
    dashboard = dashboards(engine)
    page = dashboard.open()
    card = page.locator(f'#designs article.design[data-job-id="{job_id}"]')
    expect(card).to_have_attribute('data-shows', 'mockup')
    picture = card.locator('button.art img')
    expect(picture).to_have_attribute('src', product['mockupUrl'])
    dashboard.wait_image(picture)
    card.locator('button.art').click()
    strip = page.locator('.detail-designs .mockups a')
    expect(strip).to_have_count(min(12, len(product['mockups'])))
    expect(strip.first).to_have_attribute('href', product['mockups'][0]['src'])
    dashboard.wait_image(strip.first.locator('img'))
    # The job's view still opens the print file itself.
    expect(page.locator('.detail-designs a.art')).to_have_attribute(
        'href', job['result']['generatedImages'][0]['url'])
    dashboard.close()
