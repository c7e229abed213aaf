"""Backends of POD Engine: image generators, prompt writers, publishers."""
