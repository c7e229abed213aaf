"""The settings table drives .env.example and the README; they must not drift."""

from pathlib import Path

import podengine

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_is_generated_from_the_settings_table():
    assert (ROOT / '.env.example').read_text().strip() == podengine.env_example().strip()


def test_readme_documents_every_setting_and_starts_with_the_two_commands():
    readme = (ROOT / 'README.md').read_text()
    missing = [s.name for s in podengine.SETTINGS if f'{s.name}`' not in readme]
    assert not missing
    first_block = readme.split('```bash', 1)[1].split('```', 1)[0]
    assert './start-pod-engine.sh' in first_block and './run-tests.sh' in first_block


def test_public_names_are_exported_and_say_what_they_are():
    assert len(set(podengine.__all__)) == len(podengine.__all__)
    for name in podengine.__all__:
        value = getattr(podengine, name)  # AttributeError: exported but missing
        if callable(value):
            assert (value.__doc__ or '').strip(), f'{name} has no docstring'
    # Every class a plugin or a test builds on is exported.
    for name in ('Engine', 'JobContext', 'JournalStore', 'MemoryStore', 'JobFailure'):
        assert name in podengine.__all__, name
