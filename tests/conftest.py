"""Shared fixtures: pool files on /dev/shm (the PMem stand-in), removed after each test."""

import os
import uuid

import pytest

SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None


@pytest.fixture
def pool_path(tmp_path):
    """A fresh pool path on /dev/shm (or tmp_path); the file is removed afterwards."""
    base = SHM or str(tmp_path)
    path = os.path.join(base, f"rpmp-test-{uuid.uuid4().hex[:12]}.pool")
    yield path
    if os.path.exists(path):
        os.unlink(path)
