"""LLM prompt writer: image prompts and listing copy from a language model.

Two wire formats cover the common servers:

- OpenAI-compatible chat completions (``LLM_BASE_URL``, ``LLM_API_KEY``,
  ``LLM_MODEL``): OpenAI, Ollama's ``/v1``, vLLM, LM Studio.
- The Anthropic Messages API (``ANTHROPIC_API_KEY``, ``ANTHROPIC_MODEL``).

One call asks for strict JSON holding ``count`` distinct designs. The answer
is checked (types, lengths, count, distinct titles, blocked terms); an invalid
answer is asked for once more, with the reason, and a second invalid one falls
back to the template writer with a WARNING.

An outage (a timeout, or 429 or 5xx past the in-place retries) does not stop
production either: the template writer writes those designs, each marked
``writer: "template"`` with its ``writer_reason`` (``LLM_FALLBACK=fail``
makes it a retryable job failure instead). A refusal that means the
configuration is wrong (401, 403, 404: key, permission, model) fails the job
at once with a message saying what to fix, and shows in /health until a call
succeeds. The call has a deadline, so a job never hangs on it.
"""

import html
import json
import logging
import re

from adapters.api import ApiClient, upstream_retry
from adapters.base import AdapterError, ConfigError, DesignBrief, PromptWriter
from adapters.blocklist import Blocklist
from adapters.templates import (NEGATIVE_PROMPT, TemplateWriter, clean_tags, clip_title,
                               direct_prompt, print_suffix)

log = logging.getLogger('podengine.llm')

SYSTEM = ('You are a senior print-on-demand designer and marketplace copywriter. You write '
          'prompts for an image model that draws t-shirt and hoodie graphics, and the listing '
          'copy that sells them. You answer with JSON only, no prose, no code fences.')
RULES = '''Rules:
- image_prompt: one vivid paragraph for an image model: subject, composition, palette and
  art style of a print-ready graphic, isolated on a plain background, no text in the art
  unless the request asks for lettering.
- negative_prompt: what the image model must avoid.
- title: natural marketplace title, at most 140 characters, naming the product.
- description: 2 to 4 sentences of plain text that mention the product and who it is for.
- tags: 8 to 13 lowercase search tags, each at most 20 characters, no duplicates.
- Designs must differ from each other. Never use trademarks, brand, franchise,
  character or celebrity names.'''
SHAPE = ('Answer with this JSON and nothing else ("count": {count}):\n'
         '{{"designs": [{{"image_prompt": "...", "negative_prompt": "...", "title": "...", '
         '"description": "...", "tags": ["...", "..."]}}]}}')


# Refusals that mean the configuration is wrong, and the setting to look at.
CONFIG_HINTS = {401: 'the API key', 403: "the API key's permissions",
                404: 'the model name (and the base URL)'}


class InvalidAnswer(ValueError):
    """The model answered, but not with what was asked."""


###############################################################################
# The two wire formats ########################################################
###############################################################################

class ChatApi(ApiClient):
    """What both wire formats share: errors read from ``error.message``."""

    platform = 'llm'

    def __init__(self, base_url, http, settings):
        super().__init__(base_url, http, upstream_retry(settings, tries=3),
                         timeout=settings.llm_timeout_ms / 1000)

    def reason(self, response):
        try:
            return str(response.json()['error']['message'])[:300]
        except (ValueError, KeyError, TypeError):
            return response.text[:200]


class OpenAIChat(ChatApi):
    """``POST {base}/chat/completions`` (OpenAI, Ollama, vLLM, LM Studio)."""

    def __init__(self, settings, http):
        super().__init__(settings.llm_base_url, http, settings)
        self._key = settings.llm_api_key
        self.model = settings.llm_model

    def headers(self):
        headers = {'Content-Type': 'application/json'}
        if self._key:
            headers['Authorization'] = f'Bearer {self._key}'
        return headers

    def complete(self, system, user, max_tokens):
        body = self.call('POST', '/chat/completions', json={
            'model': self.model, 'max_tokens': max_tokens, 'temperature': 0.9,
            'response_format': {'type': 'json_object'},
            'messages': [{'role': 'system', 'content': system},
                         {'role': 'user', 'content': user}]}) or {}
        try:
            return body['choices'][0]['message']['content'] or ''
        except (KeyError, IndexError, TypeError):
            raise InvalidAnswer('the answer has no choices[0].message.content') from None

    def ping(self):
        self.call('GET', '/models')


class AnthropicMessages(ChatApi):
    """``POST /v1/messages`` of the Anthropic API."""

    def __init__(self, settings, http):
        super().__init__(settings.anthropic_api_url, http, settings)
        self._key = settings.anthropic_api_key
        self.model = settings.anthropic_model

    def headers(self):
        return {'x-api-key': self._key, 'anthropic-version': '2023-06-01',
                'Content-Type': 'application/json'}

    def complete(self, system, user, max_tokens):
        body = self.call('POST', '/v1/messages', json={
            'model': self.model, 'max_tokens': max_tokens, 'temperature': 0.9,
            'system': system, 'messages': [{'role': 'user', 'content': user}]}) or {}
        texts = [block.get('text', '') for block in body.get('content') or []
                 if isinstance(block, dict) and block.get('type') == 'text']
        if not texts:
            raise InvalidAnswer('the answer has no text content')
        return ''.join(texts)

    def ping(self):
        self.call('GET', '/v1/models')


###############################################################################
# The writer ##################################################################
###############################################################################

class LlmWriter(PromptWriter):
    """Asks the configured model for briefs; the templates are its fallback."""

    name = 'llm'

    def __init__(self, settings, http):
        super().__init__(settings, http)
        if settings.llm_base_url:
            self.client = OpenAIChat(settings, http)
            self.kind = 'openai-compatible'
        elif settings.anthropic_api_key:
            self.client = AnthropicMessages(settings, http)
            self.kind = 'anthropic'
        else:
            raise ConfigError('PROMPT_WRITER=llm needs LLM_BASE_URL or ANTHROPIC_API_KEY')
        self.blocklist = Blocklist.load(settings.blocked_terms_file)
        self.fallback = TemplateWriter(settings, http)
        self.refusal = self.refusal_status = None  # the last refusal of our configuration

    def describe(self):
        return f'llm ({self.kind}: {self.client.model})'

    def health(self):
        if self.refusal:
            return False
        try:
            self.client.ping()
            return True
        except AdapterError as exc:
            if exc.status in (401, 403):  # the model list says the key is wrong
                self.refused(exc)
            return False

    def details(self):
        return {'model': self.client.model, 'refused': self.refusal} if self.refusal else None

    def problems(self):
        if not self.refusal:
            return []
        return [f'llm refuses the configuration ({self.refusal_status}): jobs that need '
                f'copy fail until {CONFIG_HINTS[self.refusal_status]} is fixed']

    def write(self, request, count, ctx):
        try:
            briefs = self.ask(request, count, ctx)
        except AdapterError as exc:
            if exc.status in CONFIG_HINTS:
                raise self.refused(exc) from None
            if not exc.retryable or self.settings.llm_fallback == 'fail':
                raise
            ctx.log(f'llm: {exc}; the template writer writes {count} design(s) instead',
                    'WARNING')
            return self.fall_back(request, count, ctx, f'the llm was unavailable: {exc}')
        self.refusal = self.refusal_status = None
        return briefs

    def refused(self, exc):
        """The job's error for a refusal of our configuration, kept for /health."""
        self.refusal, self.refusal_status = str(exc), exc.status
        return AdapterError(f'{exc} (check {CONFIG_HINTS[exc.status]})', adapter='llm',
                            status=exc.status, retryable=False)

    def fall_back(self, request, count, ctx, reason):
        briefs = self.fallback.write(request, count, ctx)
        for brief in briefs:
            brief.writer_reason = reason[:300]
        return briefs

    def ask(self, request, count, ctx):
        prompt = ask_for(request, count)
        problem = None
        for attempt in (1, 2):
            text = self.client.complete(SYSTEM, prompt, max_tokens=min(16000, 800 + 500 * count))
            try:
                return self.briefs(text, request, count)
            except InvalidAnswer as exc:
                problem = str(exc)
                ctx.log(f'llm: answer {attempt} was unusable: {problem}', 'WARNING')
                prompt = ask_for(request, count) + (
                    f'\n\nYour previous answer was rejected: {problem}. '
                    f'Follow the rules and answer with the JSON only.')
        ctx.log('llm: falling back to the template writer', 'WARNING')
        # The log says why; the reason does not repeat it (it may quote a trademark).
        return self.fall_back(request, count, ctx, 'the llm answered unusably twice')

    def briefs(self, text, request, count):
        designs = parse_designs(text)
        if len(designs) < count:
            raise InvalidAnswer(f'{len(designs)} designs instead of {count}')
        briefs = [self.brief(design, request, n) for n, design in enumerate(designs[:count])]
        if len({b.title.lower() for b in briefs}) < count:
            raise InvalidAnswer('two designs have the same title')
        return briefs

    def brief(self, design, request, number):
        fields = checked_fields(design, number)
        style = getattr(self.settings, 'print_style', '')
        if request.get('prompt'):  # the user's prompt, unchanged unless PRINT_STYLE is set
            fields['image_prompt'] = direct_prompt(request['prompt'], style)
        else:
            fields['image_prompt'] = (f'{fields["image_prompt"].rstrip(" .,")}, '
                                      f'{print_suffix(request, style)}')
        blocked = self.blocklist.find(
            fields['title'], fields['tags'], fields['image_prompt'])
        if blocked:
            raise InvalidAnswer(f'design {number + 1} uses the blocked term {blocked!r}')
        description = ' '.join(fields['description'].split())
        return DesignBrief(
            image_prompt=fields['image_prompt'], title=clip_title(fields['title']),
            description=description, tags=clean_tags(fields['tags']),
            negative_prompt=fields['negative_prompt'] or NEGATIVE_PROMPT,
            description_html=f'<p>{html.escape(description)}</p>', writer=self.name,
            caption=caption_of(fields['title']))


def ask_for(request, count):
    """The user message: what to design, the rules and the JSON shape."""
    products = ' and '.join(request.get('productTypes') or ['t-shirt'])
    lines = [f'Create exactly {count} designs for these products: {products}.']
    if request.get('prompt'):
        lines.append(f'The image is already decided: "{request["prompt"]}". Write the listing '
                     f'copy for it; put that same text in image_prompt.')
    for field in ('theme', 'style', 'niche'):
        if request.get(field):
            lines.append(f'{field}: {request[field]}')
    return '\n'.join(lines + [RULES, SHAPE.format(count=count)])


def parse_designs(text):
    """The ``designs`` list of an answer, even one wrapped in a code fence."""
    fenced = re.search(r'```(?:json)?\s*(.*?)```', text, re.DOTALL)
    body = fenced.group(1) if fenced else text
    start, end = body.find('{'), body.rfind('}')
    if start < 0 or end < start:
        raise InvalidAnswer('no JSON object in the answer')
    try:
        data = json.loads(body[start:end + 1])
    except ValueError as exc:
        raise InvalidAnswer(f'the JSON does not parse ({exc.msg})') from None
    designs = data.get('designs') if isinstance(data, dict) else None
    if not isinstance(designs, list):
        raise InvalidAnswer('the JSON has no "designs" list')
    return designs


def checked_fields(design, number):
    where = f'design {number + 1}'
    if not isinstance(design, dict):
        raise InvalidAnswer(f'{where} is not an object')
    fields = {}
    for key, limit in (('image_prompt', 2000), ('title', 200), ('description', 2000)):
        value = design.get(key)
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            raise InvalidAnswer(f'{where}: {key} must be a string of 1 to {limit} characters')
        fields[key] = value.strip()
    tags = design.get('tags')
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags) or \
            not clean_tags(tags):
        raise InvalidAnswer(f'{where}: tags must be a list of strings')
    fields['tags'] = tags
    negative = design.get('negative_prompt')
    fields['negative_prompt'] = negative.strip() if isinstance(negative, str) else ''
    return fields


GARMENT_WORDS = re.compile(r'\b(t-?shirts?|tees?|hoodies?|sweatshirts?|shirts?)\b', re.I)


def caption_of(title):
    """The title's own words for the design itself, without the product word."""
    words = GARMENT_WORDS.sub('', title).split()
    return ' '.join(words[:4])
