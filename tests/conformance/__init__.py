"""Tests of the conformance runners (reference conformance core|api)."""
