"""graftnet.io: every converter's entry points from one place, imported only when used."""

from __future__ import annotations

import subprocess
import sys

import pytest

import graftnet.io as gio


def test_import_graftnet_leaves_h5py_onnx_and_the_converters_unloaded():
    code = ("import sys, graftnet, graftnet.io; "
            "print(sorted(m for m in ('h5py', 'onnx', 'onnxruntime', 'graftnet.io.keras', 'graftnet.io.onnx', "
            "'graftnet.io.tf_checkpoint') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", gio.__all__)
def test_every_entry_point_is_the_converter_module_s_own(name):
    import importlib

    value = getattr(gio, name)
    module = importlib.import_module(value.__module__)
    assert module.__name__.startswith("graftnet.io.") and getattr(module, name) is value
    assert name in dir(gio)


def test_an_unknown_name_is_an_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="module 'graftnet.io' has no attribute 'load_kears'"):
        gio.load_kears  # noqa: B018
    from graftnet.io import keras  # submodules still import as usual

    assert keras.load_keras is gio.load_keras


def test_all_names_exactly_the_entry_points():
    assert sorted(gio.__all__) == sorted(gio._ENTRY_POINTS)
