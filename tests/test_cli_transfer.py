"""``graftnet graft`` and ``graftnet finetune``."""

from __future__ import annotations

import pytest
import torch

from graftnet.cli import main
from graftnet.cli.transfer import parse_add
from graftnet.data import digits
from graftnet.errors import ConfigError
from graftnet.io.checkpoint import load_model, save_model
from graftnet.network import Network
from graftnet.train import fit

PLAN = """\
optimizer = { type = "sgd", lr = 0.05 }
batch_size = 64

[[stage]]
epochs = 1
train = "outputs"

[[stage]]
epochs = 1
train = "all"
lr = 0.01
"""


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    data = digits()
    torch.manual_seed(0)
    base = Network.mlp(data.input_shape, [16, 16, 16], data.n_outputs, name="a")
    fit(base, data, epochs=1, batch_size=64, verbose=False, seed=0, cache=False)
    path = tmp_path_factory.mktemp("models") / "a"
    save_model(base, path, metadata={"data": data.source, "classes": data.classes})
    return path


def test_graft_trains_prints_and_saves_with_lineage(base_dir, tmp_path, capsys):
    out = tmp_path / "b"
    code = main(["graft", str(base_dir), "--reuse", "hidden[123]", "--freeze", "hidden[12]", "--add", "20:relu",
                 "--add", "10", "--data", "digits", "--epochs", "2", "--batch-size", "64", "--seed", "0",
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "origin" in captured.out and "reused from a:hidden3" in captured.out
    assert "frozen" in captured.out and "params: " in captured.out and "test: loss" in captured.out
    assert "cache: layers flatten..hidden2 (3 layers) are frozen" in captured.err
    assert "epoch 1/2" in captured.err and "epoch 2/2" in captured.err
    model = load_model(out)
    assert model.layer_names == ["flatten", "hidden1", "hidden2", "hidden3", "hidden4", "outputs"]
    assert model.frozen == ["hidden1", "hidden2"]
    assert model.lineage["base_path"] == str(base_dir) and model.lineage["new"] == ["hidden4", "outputs"]
    assert model.info["classes"] == [str(d) for d in range(10)] and "test" in model.info["metrics"]


def test_graft_errors_are_one_line_with_exit_code_2(base_dir, tmp_path, capsys):
    cases = [
        (["--reuse", "hidden[13]", "--add", "10"], "leaves out hidden2"),
        (["--reuse", "hidden[6-9]", "--add", "10"], "matched no layer; layers are flatten, hidden1..hidden3"),
        (["--freeze", "hiden1", "--add", "10"], "freeze='hiden1' matched no layer"),
        (["--add", "ten"], "--add 'ten': expected UNITS"),
        (["--add", "10:relux"], "unknown activation"),
        (["--add", "3", "--data", "digits", "--epochs", "1"], "the model has 3 output"),
    ]
    for extra, message in cases:
        code = main(["graft", str(base_dir), "--out", str(tmp_path / "x"), *extra])
        err = capsys.readouterr().err
        assert code == 2, (extra, err)
        assert message in err and "Traceback" not in err, (extra, err)
        assert err.startswith("graftnet: error: ") and err.count("graftnet: error") == 1
    assert main(["graft", str(tmp_path / "missing"), "--add", "10"]) == 2
    assert "no model at" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_finetune_runs_a_plan_and_saves(base_dir, tmp_path, capsys):
    grafted = tmp_path / "b"
    assert main(["graft", str(base_dir), "--add", "10", "--freeze", "reused", "--out", str(grafted)]) == 0
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    out = tmp_path / "b-ft"
    code = main(["finetune", str(grafted), "--plan", str(plan), "--data", "digits", "--seed", "1",
                 "--checkpoint", str(tmp_path / "ck"), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "stage 1/2 'stage-1': 1 epochs, training outputs" in captured.err
    assert "stage 2/2" in captured.err and "cache: layers flatten..hidden3" in captured.err
    model = load_model(out)
    assert model.frozen == [] and model.lineage["base"] == "a"
    assert [row["stage"] for row in model.info["history"]["epochs"]] == ["stage-1", "stage-2"]
    assert model.info["finetuned_from"] == str(grafted)
    assert (tmp_path / "ck" / "plan.json").is_file()

    # resuming a finished plan trains nothing more and gives the same model
    again = tmp_path / "b-ft2"
    assert main(["finetune", str(grafted), "--plan", str(plan), "--data", "digits", "--checkpoint",
                 str(tmp_path / "ck"), "--resume", "--out", str(again)]) == 0
    assert "resuming" in capsys.readouterr().err
    for key, value in model.state_dict().items():
        assert torch.equal(value, load_model(again).state_dict()[key]), key


def test_finetune_errors(base_dir, tmp_path, capsys):
    code = main(["finetune", str(base_dir), "--plan", str(tmp_path / "nope.toml"), "--data", "digits"])
    assert code == 2 and "no plan file at" in capsys.readouterr().err
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.replace("train = \"outputs\"", "train = \"outputz\""))
    code = main(["finetune", str(base_dir), "--plan", str(plan), "--data", "digits"])
    err = capsys.readouterr().err
    assert code == 2 and "train='outputz' matched no layer" in err and "Traceback" not in err
    code = main(["finetune", str(base_dir), "--plan", str(plan)])
    assert code == 2 and "no data" in capsys.readouterr().err
    code = main(["finetune", str(base_dir), "--plan", str(plan), "--data", "digits", "--resume"])
    assert code == 2 and "--resume needs --checkpoint" in capsys.readouterr().err


def test_parse_add():
    spec = parse_add("20:relu:hidden4")
    assert (spec.units, spec.activation, spec.name, spec.init) == (20, "relu", "hidden4", "he_normal")
    assert (parse_add("10").activation, parse_add("10::outputs").name) == (None, "outputs")
    with pytest.raises(ConfigError, match="UNITS a whole number > 0"):
        parse_add("0:relu")


def test_inspect_of_a_grafted_model_shows_a_short_lineage(base_dir, tmp_path, capsys):
    grafted = tmp_path / "b"
    assert main(["graft", str(base_dir), "--reuse", "hidden[12]", "--add", "10", "--freeze", "reused",
                 "--out", str(grafted)]) == 0
    fingerprint = load_model(grafted).lineage["base_fingerprint"]
    capsys.readouterr()
    assert main(["inspect", str(grafted)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("lineage:")]
    assert lines == [f"lineage:   base a ({base_dir}, fingerprint {fingerprint[:12]}), "
                     f"3 reused and 1 new layer(s)"]  # flatten, hidden1, hidden2 reused


def test_graft_and_finetune_never_replace_a_model_silently(base_dir, tmp_path, capsys, monkeypatch):
    """Outputs are named after the input folder (not the network's name, which every MLP shares),
    and an existing model there is replaced only with --overwrite, as import and export do."""
    monkeypatch.chdir(tmp_path)
    assert main(["graft", str(base_dir), "--add", "10", "--freeze", "reused"]) == 0
    out = tmp_path / "models" / f"{base_dir.name}-graft"
    assert (out / "spec.json").is_file()
    first = (out / "weights.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["graft", str(base_dir), "--add", "10"]) == 2
    err = capsys.readouterr().err
    assert f"models/{base_dir.name}-graft already exists; pass --overwrite to replace it" in err
    assert (out / "weights.safetensors").read_bytes() == first
    assert main(["graft", str(base_dir), "--add", "10", "--overwrite", "--seed", "3"]) == 0
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    finetune = ["finetune", str(out), "--plan", str(plan), "--data", "digits", "--train-size", "200"]
    assert main(finetune) == 0
    assert (tmp_path / "models" / f"{base_dir.name}-graft-ft" / "spec.json").is_file()
    assert main(finetune) == 2  # refused before any training
    assert "-graft-ft already exists; pass --overwrite" in capsys.readouterr().err
    assert main([*finetune, "--overwrite"]) == 0
