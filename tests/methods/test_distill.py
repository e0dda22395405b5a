"""``method: distill`` on tiny models: a 2-layer student learns from the 4-layer ``tiny`` teacher
through the one loop; the teacher stays frozen; the top-k cache equals online at k = V and is
reused on resume; a teacher with another vocabulary is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunelab.config import load_config
from tunelab.errors import ConfigError
from tunelab.train.loop import train

WORDS = ["red", "green", "blue", "cat", "dog", "bird", "sun", "moon"]


def make_student(folder: Path, tiny_path: Path, layers: int = 2, seed: int = 1, tokenizer=None) -> Path:
    """A freshly initialised ``layers``-layer copy of tiny's architecture (tiny's tokenizer unless given)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(tiny_path)
    config.num_hidden_layers = layers
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(tiny_path)
    config.vocab_size = len(tokenizer)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def student_path(tmp_path_factory, tiny_path):
    return make_student(tmp_path_factory.mktemp("student"), tiny_path)


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distill-data")
    paths = []
    for name, n, offset in (("train", 40, 0), ("val", 8, 100)):
        rows = [
            {
                "instruction": f"Say the word after {WORDS[i % 8]} number {i + offset}.",
                "input": "",
                "output": f"The word is {WORDS[(i * 3 + 1) % 8]} and {WORDS[(i + 2) % 8]}.",
            }
            for i in range(n)
        ]
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(str(path))
    return paths


def distill_config(tmp_path, student, data_files, *overrides):
    base = [
        "method=distill",
        f"model.name={student}",
        "adapter.type=full",
        "method_args.teacher=tiny",
        f"data.path={data_files[0]}",
        f"data.validation_path={data_files[1]}",
        "data.template=alpaca",
        "data.max_length=64",
        "training.precision=fp32",
        "training.device=cpu",
        "training.max_steps=4",
        "training.micro_batch_size=4",
        "training.learning_rate=0.003",
        "training.lr_scheduler=constant",
        "training.eval_every=0",
        "training.save_every=0",
        "training.log_every=1",
        f"output_dir={tmp_path / 'runs'}",
    ]
    return load_config(None, base + list(overrides))


def _records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_student_kl_to_teacher_falls_on_heldout_data(tmp_path, student_path, data_files):
    cfg = distill_config(
        tmp_path, student_path, data_files, "training.max_steps=30", "training.eval_every=30", "name=kl"
    )
    result = train(cfg)
    vals = [r for r in _records(result.run_dir) if "val_divergence" in r]
    first, last = vals[0]["val_divergence"], vals[-1]["val_divergence"]
    assert vals[0]["step"] == 0 and vals[-1]["step"] == 30
    assert last < 0.5 * first, (first, last)  # forward KL(teacher || student) on the validation file
    assert result.val["val_loss"] == pytest.approx(result.val["val_divergence"], rel=1e-6)  # alpha = 0, T = 1


def test_teacher_is_frozen_in_eval_mode_and_unchanged(tmp_path, student_path, data_files):
    from tunelab.methods.distill import Distill
    from tunelab.models.load import load_model

    cfg = distill_config(tmp_path, student_path, data_files, "method_args.alpha=0.5", "method_args.loss=jsd")
    model, tokenizer = load_model(cfg.model, cfg.adapter, for_training=True, device="cpu")
    method = Distill(cfg, model, tokenizer, tmp_path)
    teacher = method.teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    batch = method.collate(list(method.build_datasets().train[:4]))
    loss, metrics = method.loss(model, batch)
    loss.backward()
    assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    # alpha mixes the label cross-entropy in: loss = 0.5 nll + 0.5 * T^2 * divergence
    assert loss.item() == pytest.approx(0.5 * metrics["nll"] + 0.5 * metrics["divergence"], rel=1e-5)
    # the teacher's log-probs carry no autograd history
    mask = batch["labels"][:, 1:] != -100
    inputs = {k: batch[k] for k in ("input_ids", "position_ids")}
    assert not method.teacher_logp(inputs, mask).requires_grad


def test_cache_with_k_equal_vocab_matches_online_and_is_reused_on_resume(
    tmp_path, student_path, data_files, monkeypatch
):
    online = train(distill_config(tmp_path, student_path, data_files, "name=online", "method_args.loss=jsd"))
    cached_cfg = distill_config(
        tmp_path,
        student_path,
        data_files,
        "name=cached",
        "method_args.loss=jsd",
        "method_args.teacher_logits=cache",
        "method_args.top_k=100000",
        "training.save_every=2",
    )
    cached = train(cached_cfg)
    losses = [[r["loss"] for r in _records(run.run_dir) if "loss" in r and "step" in r] for run in (online, cached)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert cached.val["val_loss"] == pytest.approx(online.val["val_loss"], abs=1e-5)
    assert cached.val["val_agreement"] == pytest.approx(online.val["val_agreement"])  # the cached top-1 is exact
    cache_file = Path(cached.run_dir) / "teacher_topk.safetensors"
    assert cached.extra["teacher_cache"]["bytes"] > 0 and cache_file.is_file()
    # resume: the same file is reused (not rewritten with new values) and the teacher never loads
    stamp = (cache_file.read_bytes(), cache_file.stat().st_mtime_ns)
    import tunelab.models.load as load

    loads = []
    real = load.load_model
    monkeypatch.setattr(load, "load_model", lambda args, *a, **k: loads.append(args.name) or real(args, *a, **k))
    longer = cached_cfg.model_copy(update={"training": cached_cfg.training.model_copy(update={"max_steps": 6})})
    resumed = train(longer, resume=True)
    assert (cache_file.read_bytes(), cache_file.stat().st_mtime_ns) == stamp and resumed.steps == 6
    assert loads == [str(student_path)]  # the student only: the teacher is not loaded again


def test_small_topk_cache_is_small_and_trains(tmp_path, student_path, data_files):
    run = train(
        distill_config(
            tmp_path, student_path, data_files, "name=k4", "method_args.teacher_logits=cache", "method_args.top_k=4"
        )
    )
    info = run.extra["teacher_cache"]
    # per trained token: 4 int32 ids + 4 fp32 log-probs + 1 fp32 rest mass, + 8-byte row offsets
    assert info["bytes"] <= info["trained_tokens"] * (4 * 8 + 4) + 8 * 60
    assert run.final_loss is not None and run.final_loss >= 0


def test_teacher_with_another_vocabulary_is_a_config_error(tmp_path, tiny_path, data_files):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        WORDS * 10,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<|im_end|>", "<pad>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    other = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>")
    teacher = make_student(tmp_path / "other-vocab", tiny_path, tokenizer=other)
    student = make_student(tmp_path / "student", tiny_path)
    cfg = distill_config(tmp_path, teacher, data_files, f"method_args.teacher={student}")
    with pytest.raises(ConfigError, match=r"method_args.teacher: .* does not share the student's tokenizer(.|\n)*fix:"):
        train(cfg)


def test_bundled_example_dry_runs_on_tiny(tmp_path, student_path, monkeypatch, capsys):
    from tunelab.cli.main import main
    from tunelab.presets.bundled_examples import get_example

    example = get_example("distill")
    monkeypatch.chdir(example.path.parents[1])  # data paths are relative to the checkout
    cfg = load_config(
        example.path,
        [
            f"model.name={student_path}",
            "method_args.teacher=tiny",
            "adapter.r=4",
            "training.max_steps=2",
            "training.eval_every=0",
            "training.save_every=0",
            f"output_dir={tmp_path}",
        ],
    )
    assert cfg.method_args["teacher_logits"] == "cache" and cfg.method_args["loss"] == "forward_kl"
    result = train(cfg)
    assert result.steps == 2 and result.extra["teacher_cache"]["trained_tokens"] > 0
    assert main(["examples", "list"]) == 0
    assert any(line.startswith("distill ") for line in capsys.readouterr().out.splitlines())


def test_planner_holds_the_teacher_of_the_config(tmp_path, student_path, data_files):
    from tunelab.memory.preflight import spec_from_config
    from tunelab.memory.training import plan_training

    spec = spec_from_config(distill_config(tmp_path, student_path, data_files))
    assert spec.method == "distill" and spec.reference == "none"
    assert (spec.arch.num_hidden_layers, spec.teacher_arch.num_hidden_layers) == (2, 4)  # student, tiny teacher
    assert plan_training(spec).models > 0  # the frozen teacher is in the plan


def test_a_run_needs_a_teacher_but_the_planner_does_not(capsys):
    from tunelab.cli.main import main

    with pytest.raises(ConfigError, match="method distill needs a teacher"):
        load_config(None, ["method=distill", "model.name=tiny"])
    assert main(["plan", "--model", "smollm2-135m-instruct", "--method", "distill"]) == 0  # teacher: same arch
    assert "teacher (smollm2-135m) held frozen" in capsys.readouterr().err


def test_restricted_vocabulary_is_the_full_math_over_the_kept_ids(tmp_path, student_path, data_files):
    """``method_args.vocab``: student and teacher are both softmaxed over the kept ids only, the
    cross-entropy skips labels outside them, and only trained positions reach the head; checked
    against the same loss written out from the two models' full logits."""
    import torch.nn.functional as F

    from tunelab.methods.distill import Distill
    from tunelab.models.load import load_model

    probe = distill_config(tmp_path, student_path, data_files)
    model, tokenizer = load_model(probe.model, probe.adapter, for_training=True, device="cpu")
    batch = Distill(probe, model, tokenizer, tmp_path).collate(
        list(Distill(probe, model, tokenizer, tmp_path).build_datasets().train[:4])
    )
    mask = batch["labels"][:, 1:] != -100
    labels = batch["labels"][:, 1:][mask]
    common = labels.unique()[: max(2, len(labels.unique()) // 2)].tolist()  # half the answer tokens are kept
    vocab = sorted(set(common) | {0, 5, 17})
    cfg = distill_config(tmp_path, student_path, data_files, "method_args.alpha=0.5", f"method_args.vocab={vocab}")
    method = Distill(cfg, model, tokenizer, tmp_path)
    inputs = {k: batch[k] for k in ("input_ids", "position_ids")}
    loss, metrics = method.loss(model, batch)

    with torch.no_grad():
        full_s = model(**inputs).logits[:, :-1][mask][:, vocab]
        full_t = method.teacher(**inputs).logits[:, :-1][mask][:, vocab]
    s, t = F.log_softmax(full_s, -1), F.log_softmax(full_t, -1)
    kl = (t.exp() * (t - s)).sum(-1).mean()
    index = {v: i for i, v in enumerate(vocab)}
    kept = [i for i, v in enumerate(labels.tolist()) if v in index]
    assert 0 < len(kept) < len(labels)  # some labels are outside the kept ids
    nll = -torch.stack([s[i, index[labels[i].item()]] for i in kept]).mean()
    assert metrics["divergence"] == pytest.approx(kl.item(), rel=1e-5, abs=1e-6)
    assert metrics["nll"] == pytest.approx(nll.item(), rel=1e-5)
    assert loss.item() == pytest.approx(0.5 * nll.item() + 0.5 * kl.item(), rel=1e-5)
    assert metrics["agreement"] == pytest.approx((s.argmax(-1) == t.argmax(-1)).float().mean().item())


def test_restricted_vocabulary_cache_equals_online_and_ids_are_checked(tmp_path, student_path, data_files):
    vocab = list(range(0, 400, 3))
    online = train(distill_config(tmp_path, student_path, data_files, "name=v-online", f"method_args.vocab={vocab}"))
    cached = train(
        distill_config(
            tmp_path, student_path, data_files, "name=v-cached", f"method_args.vocab={vocab}",
            "method_args.teacher_logits=cache", f"method_args.top_k={len(vocab)}",
        )
    )
    losses = [[r["loss"] for r in _records(run.run_dir) if "loss" in r and "step" in r] for run in (online, cached)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    with pytest.raises(ConfigError, match="outside the student's vocabulary"):
        train(distill_config(tmp_path, student_path, data_files, "name=v-bad", "method_args.vocab=[1,2,99999]"))
