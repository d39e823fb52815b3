"""Tests of the doctor, inspect and audit commands."""
