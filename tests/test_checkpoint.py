"""
Checkpoints under faults and hostile input: atomic writes (a run SIGKILLed while it saves), and
``--resume`` that only follows ``last_checkpoint`` into OUTPUT_DIR and never unpickles.
"""

import os
import pickle
import subprocess
import sys

import pytest
import torch
from conftest import one_line_error
from detectron2.engine import default_argument_parser
from test_training import CONFIG, ROOT, TRAIN, tiny_opts, train_net

pytestmark = pytest.mark.usefixtures("tiny_split")


def _opts(out):
    return tiny_opts(out, 6, "SOLVER.CHECKPOINT_PERIOD", "4", "MODEL.MATCH_ON", "False",
                     "MODEL.ROI_HEADS.NAME", "StandardROIHeads")  # fmt: skip


def _resumed(out):
    args = default_argument_parser().parse_args(["--config-file", CONFIG, "--resume"] + _opts(out))
    trainer = train_net.Trainer(train_net.setup(args))
    trainer.resume_or_load(resume=True)
    return trainer


class _Payload:
    def __reduce__(self):
        return (open, (os.environ["DF2_TEST_MARKER"], "w"))


def test_resume_never_follows_last_checkpoint_out_of_output_dir(tmp_path, monkeypatch, capfd):
    out = tmp_path / "run"
    train_net.main(default_argument_parser().parse_args(["--config-file", CONFIG] + _opts(out)))
    marker = tmp_path / "payload-ran"
    monkeypatch.setenv("DF2_TEST_MARKER", str(marker))
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"model": _Payload(), "__author__": "x"}))
    (out / "last_checkpoint").write_text(str(evil))  # an absolute path outside OUTPUT_DIR
    trainer = _resumed(out)
    assert not marker.exists()
    assert trainer.start_iter == 6  # the newest intact checkpoint of the folder: model_final
    assert "not a checkpoint file of" in capfd.readouterr().out
    # a pickle payload inside OUTPUT_DIR, under a checkpoint's name: read with weights_only
    (out / "model_final.pth").write_bytes(pickle.dumps({"model": _Payload()}))
    (out / "last_checkpoint").write_text("model_final.pth")
    trainer = _resumed(out)
    assert not marker.exists() and trainer.start_iter == 4  # fell back to model_0000003


KILLER = """
import os, signal, sys
import torch
sys.path.insert(0, {tools!r})
import train_net
from detectron2.engine import default_argument_parser
from deepfashion2.data import register_deepfashion2

register_deepfashion2({train!r}, {annos!r}, {images!r})
stock = torch.save

def save(obj, f, *a, **k):
    name = os.readlink(f"/proc/self/fd/{{f.fileno()}}") if hasattr(f, "fileno") else str(f)
    if "model_final" in name:  # killed while the final checkpoint is half written
        f.write(b"PK\\x03\\x04 half a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return stock(obj, f, *a, **k)

torch.save = save
args = default_argument_parser().parse_args(["--config-file", {config!r}] + {opts!r})
train_net.main(args)
"""


@pytest.mark.slow
def test_a_run_killed_while_saving_resumes_from_intact_files(tmp_path, synthetic_split):
    out = tmp_path / "run"
    script = tmp_path / "killed.py"
    script.write_text(
        KILLER.format(
            tools=os.path.join(ROOT, "tools"), train=TRAIN, config=CONFIG, opts=_opts(out),
            annos=os.path.join(synthetic_split, "annos"),
            images=os.path.join(synthetic_split, "image"),
        )  # fmt: skip
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=600)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    # the kill hit model_final.pth: nothing of it, and last_checkpoint still names the intact one
    assert not (out / "model_final.pth").exists()
    assert (out / "last_checkpoint").read_text() == "model_0000003.pth"
    torch.load(out / "model_0000003.pth", weights_only=True)  # intact
    trainer = _resumed(out)
    assert trainer.start_iter == 4
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]  # the half file is cleaned up
    trainer.train()
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 5


def test_resume_skips_a_truncated_checkpoint(tmp_path, capfd):
    out = tmp_path / "run"
    train_net.main(default_argument_parser().parse_args(["--config-file", CONFIG] + _opts(out)))
    (out / "model_final.pth").write_bytes(b"")  # as a full disk or an old non-atomic write leaves
    trainer = _resumed(out)
    assert trainer.start_iter == 4 and "Cannot resume from" in capfd.readouterr().out


def test_resume_refuses_another_models_checkpoint_by_its_first_difference(tmp_path):
    from deepfashion2.engine import CheckpointMismatchError

    out = tmp_path / "run"
    train_net.main(default_argument_parser().parse_args(["--config-file", CONFIG] + _opts(out)))
    # another layer size: Detectron2 would skip the layer, then restore AdamW's state of the old
    # shapes (the fused step then crashed the process)
    args = default_argument_parser().parse_args(
        ["--config-file", CONFIG, "--resume"] + _opts(out) + ["MODEL.ROI_BOX_HEAD.FC_DIM", "24"]
    )
    trainer = train_net.Trainer(train_net.setup(args))
    with pytest.raises(CheckpointMismatchError, match=r"model_final\.pth is a checkpoint of "
                       r"another model: roi_heads\.box_head\.fc1\.weight has shape"):  # fmt: skip
        trainer.resume_or_load(resume=True)
    # the model that trained there, with a matching head added: its tensors are missing there,
    # which is not "no intact checkpoint"
    args = default_argument_parser().parse_args(
        ["--config-file", CONFIG, "--resume"] + tiny_opts(out, 6, "SOLVER.CHECKPOINT_PERIOD", "4")
    )
    trainer = train_net.Trainer(train_net.setup(args))
    with pytest.raises(CheckpointMismatchError, match=r"no tensor for roi_heads\.match_head"):
        trainer.resume_or_load(resume=True)


def test_resume_refuses_optimizer_state_of_other_shapes(tmp_path, capsys):
    from deepfashion2.engine import CheckpointMismatchError

    out = tmp_path / "run"
    train_net.main(default_argument_parser().parse_args(["--config-file", CONFIG] + _opts(out)))
    ckpt = torch.load(out / "model_final.pth", weights_only=True)
    state = ckpt["trainer"]["_trainer"]["optimizer"]["state"]
    first = min(state)
    state[first] = {k: (v.flatten()[:1] if v.dim() else v) for k, v in state[first].items()}
    torch.save(ckpt, out / "model_final.pth")
    with pytest.raises(CheckpointMismatchError, match=r"optimizer state '\w+' of parameter"):
        _resumed(out)
    # the command line says it in one line (exit status 2)
    argv = ["--config-file", CONFIG, "--resume"] + _opts(out)
    line = one_line_error(capsys, train_net.cli, argv)
    assert line.startswith("error: --resume: ")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", "pickle"])
def test_resume_with_no_intact_checkpoint_is_one_line(tmp_path, capsys, content):
    out = tmp_path / "run"
    out.mkdir()
    data = pickle.dumps(os.system) if content == "pickle" else content  # nothing of it runs
    (out / "model_final.pth").write_bytes(data)
    (out / "last_checkpoint").write_text("model_final.pth")
    line = one_line_error(capsys, train_net.cli, ["--config-file", CONFIG, "--resume"] + _opts(out))
    assert "--resume: no intact checkpoint here (remove its last_checkpoint" in line


def test_missing_weights_are_one_line_with_what_helps(tmp_path, capsys):
    argv = ["--config-file", CONFIG, "--eval-only"] + _opts(tmp_path / "run")
    line = one_line_error(capsys, train_net.cli, argv + ["MODEL.WEIGHTS", "no/such.pth"])
    assert line.startswith("error: no/such.pth: no such weights file") and "make demo" in line


def test_weights_holding_pickled_objects_are_refused_in_one_line(tmp_path, capsys):
    """A .pth whose payload is a pickle (as a forged catalogue's sha256 would vouch for)."""
    evil = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "run": _Payload()}, evil)
    argv = ["--config-file", CONFIG, "--eval-only"] + _opts(tmp_path / "run")
    line = one_line_error(capsys, train_net.cli, argv + ["MODEL.WEIGHTS", str(evil)])
    assert "evil.pth: refused: it holds pickled objects" in line
    assert not os.path.exists("/tmp/df2-pwned")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/df2-pwned",))


def test_only_the_newest_periodic_checkpoints_are_kept(tmp_path):
    """SOLVER.CHECKPOINTS_TO_KEEP 1 (the demo's): one periodic file beside model_final."""
    out = tmp_path / "run"
    opts = tiny_opts(
        out, 8, "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.CHECKPOINTS_TO_KEEP", "1",
        "MODEL.MATCH_ON", "False", "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
    )  # fmt: skip
    train_net.main(default_argument_parser().parse_args(["--config-file", CONFIG] + opts))
    assert sorted(n for n in os.listdir(out) if n.endswith(".pth")) == [
        "model_0000007.pth", "model_final.pth"
    ]  # fmt: skip
