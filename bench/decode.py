"""Token-by-token decoding of a LLaMA-shaped model: dense fp32 / bf16, dynamic int8 and wsq, one run.

The model is transformers' ``LlamaForCausalLM`` built from a config with seeded random weights
(nothing is downloaded; default 219.7M parameters: hidden 1024, 12 layers, MLP 2816, vocabulary
32000, untied head). Each variant generates ``--tokens`` new tokens greedily at batch 1 with the KV
cache from the same prompt; the variants are timed round-robin (each repeat runs every variant once,
so machine noise hits them alike), with the same torch/OpenMP thread count, and the median tokens/s
is reported with its ratios to dense fp32 and dynamic int8.

Variants: ``fp32`` (the dense model), ``bf16`` (the same, cast), ``int8`` (torch's
``quantize_dynamic`` on every nn.Linear: fbgemm int8 weights, dynamic per-batch activation scales),
``int4wo`` (every nn.Linear on aten._weight_int4pack_mm_for_cpu, group 128, bf16 activations: the
CPU layout of torchao's int4 weight-only), ``int8wo`` (aten._weight_int8pack_mm, fp32 activations),
``wsq4`` / ``wsq8`` (``wsq.compress`` with k = 16 / 256 over every 2-D weight, embeddings and head
included: 4- / 8-bit packed indices into one codebook; Linear layers run the fused LUT kernel),
``wsqgrid`` (the grid method, ``wsq.tune``, to --grid-tolerance of the mean cosine between the
model's logits and the dense model's on 4 seeded prompts; the file it writes is saved and loaded
back, so what runs is what a user gets: each tensor at the width of the values it uses).

Validation, before timing: each wsq model is compared with its *dequantized twin*, the dense fp32
model with every compressed weight replaced by ``Compressed.dequantized_state_dict()`` (the exact
values the wsq layers compute with):
  * the generated token ids must be identical (greedy, all ``--tokens`` of them);
  * per-step logits: with L64 = the twin's logits in float64 over the same token sequence
    (teacher-forced, no cache), max |logits_wsq - L64| must be <= 2 x max |logits_twin_fp32 - L64|
    + 1e-6 (wsq's fused kernel may round no worse than twice torch's own fp32 path).

Resident memory: each variant is also built in a fresh process, the dense source dropped, then the
RSS (VmRSS) above the process's baseline after imports, and the peak (VmHWM, reset before
generation) while generating, are read from /proc/self/status.

On a machine shared with other jobs use --threads 1: with more runnable threads than cores every
OpenMP parallel region (wsq, int8 and bf16 run ~85 per token) waits for a descheduled thread.

    python bench/decode.py [--tokens 128] [--repeats 3] [--hidden 1024 --layers 12 ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

import torch
import torch.nn as nn
from _targets import decode_targets
from _timing import (
    add_cap_argument,
    cap_all,
    int4_weight_only,
    int8_weight_only,
    machine,
    print_table,
    reset_peak,
    status_kib,
    write_json,
)

import wsq

VARIANTS = ("fp32", "bf16", "int8", "int4wo", "int8wo", "wsq4", "wsq8", "wsqgrid")
WEIGHT_ONLY = {"int4wo": int4_weight_only, "int8wo": int8_weight_only}


class _WeightOnly(nn.Module):
    """An nn.Linear run by one of torch's weight-only kernels (bench/_timing.py); the packed weight
    lives in the kernel's closure, so the memory columns do not count it."""

    def __init__(self, lin: nn.Linear, make) -> None:
        super().__init__()
        self.f = make(lin.weight.detach())
        self.bias = lin.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.f(x.reshape(-1, x.shape[-1]).float()).float()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], y.shape[-1])


def _swap_linears(model: nn.Module, make) -> nn.Module:
    for mod in list(model.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.Linear):
                setattr(mod, child_name, _WeightOnly(child, make))
    return model


WSQ_K = {"wsq4": 16, "wsq8": 256}


def build_dense(args) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.inter,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=max(2048, args.prompt + args.tokens),
        tie_word_embeddings=False,
    )
    torch.manual_seed(args.seed)
    m = LlamaForCausalLM(cfg).eval()
    m.generation_config.eos_token_id = None  # always generate exactly --tokens tokens
    m.generation_config.pad_token_id = 0
    return m


def logits_cosine(dense: nn.Module, args):
    """evaluate(model) -> mean cosine of its logits to the dense model's on 4 seeded prompts."""
    g = torch.Generator().manual_seed(args.seed + 2)
    ids = torch.randint(1, args.vocab, (4, 16), generator=g)
    with torch.no_grad():
        ref = dense(ids).logits

    def evaluate(model: nn.Module) -> float:
        with torch.no_grad():
            got = model(ids).logits
        return float(torch.nn.functional.cosine_similarity(got, ref, dim=-1).mean())

    return evaluate


def grid_file(dense: nn.Module, args) -> str:
    """Tune the grid method on `dense` and save the file (cached per configuration in the tmp dir,
    so the fresh-process memory children load the very file)."""
    import hashlib
    import tempfile

    cfg = (args.hidden, args.inter, args.layers, args.heads, args.vocab, args.seed)
    key = hashlib.sha256(repr((cfg, args.grid_tolerance)).encode())
    path = os.path.join(tempfile.gettempdir(), f"wsq-decode-grid-{key.hexdigest()[:16]}.wsq")
    if not os.path.exists(path):
        t0 = time.perf_counter()
        c = wsq.tune(dense, logits_cosine(dense, args), tolerance=args.grid_tolerance)
        wsq.save(c, path)
        s = c.stats()
        print(
            f"# wsqgrid: wsq.tune to cosine >= 1 - {args.grid_tolerance} in "
            f"{time.perf_counter() - t0:.0f} s: file {s['bits_entropy']:.2f} bits/w "
            f"(CR {s['cr']:.2f}x), in memory {s['bits_memory']:.2f} bits/w, widths {s['widths']}"
        )
    return path


def build_variant(name: str, dense: nn.Module, *, inplace: bool = False, args=None):
    """(model, bits or None): the variant made from `dense` (copied unless inplace)."""
    if name == "fp32":
        return dense, None
    if name == "bf16":
        return (dense if inplace else copy.deepcopy(dense)).to(torch.bfloat16), None
    if name == "int8":
        warnings.filterwarnings("ignore", message=".*deprecated.*")  # torch.ao's notices
        src = dense if inplace else copy.deepcopy(dense)
        return torch.ao.quantization.quantize_dynamic(src, {nn.Linear}, dtype=torch.qint8), None
    if name in WEIGHT_ONLY:
        src = dense if inplace else copy.deepcopy(dense)
        return _swap_linears(src, WEIGHT_ONLY[name]), None
    if name in WSQ_K:
        c = wsq.compress(dense, WSQ_K[name])
        c.model.generation_config = copy.deepcopy(dense.generation_config)
        return c, c.bits
    if name == "wsqgrid":
        path = grid_file(dense, args)
        with torch.device("meta"):
            template = type(dense)(dense.config).eval()
        template.model.rotary_emb = copy.deepcopy(dense.model.rotary_emb)  # non-persistent buffer
        c = wsq.load(path, template)
        c.model.generation_config = copy.deepcopy(dense.generation_config)
        return c, round(c.memory()["bits_memory"], 2)
    raise ValueError(f"variant must be one of {VARIANTS}, got {name!r}")


def prompt_ids(args) -> torch.Tensor:
    g = torch.Generator().manual_seed(args.seed + 1)
    return torch.randint(1, args.vocab, (1, args.prompt), generator=g)


def generate(model: nn.Module, ids: torch.Tensor, n: int, *, logits: bool = False):
    with torch.inference_mode():
        out = model.generate(
            ids,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            use_cache=True,
            return_dict_in_generate=True,
            output_logits=logits,
        )
    seq = out.sequences
    if seq.shape[1] != ids.shape[1] + n:
        raise RuntimeError(f"generated {seq.shape[1] - ids.shape[1]} tokens, expected {n}")
    return seq, (torch.cat(out.logits).float() if logits else None)


def dequantized_twin(dense: nn.Module, comp) -> nn.Module:
    twin = copy.deepcopy(dense)
    missing = twin.load_state_dict(comp.dequantized_state_dict(), strict=False)
    if missing.unexpected_keys:
        raise RuntimeError(f"unexpected keys {missing.unexpected_keys}")
    return twin


def validate(name: str, dense: nn.Module, comp, ids: torch.Tensor, n: int) -> dict:
    """Token ids and logits of the wsq model against its dequantized twin (see the module doc)."""
    twin = dequantized_twin(dense, comp)
    seq_w, lg_w = generate(comp.model, ids, n, logits=True)
    seq_t, lg_t = generate(twin, ids, n, logits=True)
    # float64 logits of the twin on the wsq model's sequence, teacher-forced: the position before
    # each generated token predicts it
    twin64 = twin.double()
    with torch.inference_mode():
        full = twin64(seq_w[:, :-1], use_cache=False).logits[0, ids.shape[1] - 1 :]
    del twin64, twin
    err_w = float((lg_w.double() - full).abs().max())
    err_t = float((lg_t.double() - full).abs().max()) if torch.equal(seq_w, seq_t) else float("nan")
    same = torch.equal(seq_w, seq_t)
    ok = same and err_w <= 2 * err_t + 1e-6
    row = {
        "variant": name,
        "tokens equal": same,
        "first differing step": None
        if same
        else int((seq_w != seq_t).nonzero()[0, 1]) - ids.shape[1],
        "logit err wsq": err_w,
        "logit err torch fp32": err_t,
        "logit scale": float(full.abs().max()),
        "ok": ok,
    }
    if not ok:
        raise AssertionError(f"{name}: outputs differ from the dequantized model: {row}")
    return row


# ----------------------------------------------------------------------------- memory (child)


def _trim() -> None:
    gc.collect()
    try:  # give freed heap pages back so VmRSS shows what is live
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _state_bytes(values) -> int:
    """Bytes of the distinct tensors in state_dict values (int8's packed params are tuples)."""
    seen: dict[int, int] = {}
    stack = list(values)
    while stack:
        v = stack.pop()
        if isinstance(v, (tuple, list)):
            stack.extend(v)
        elif isinstance(v, torch.Tensor):
            seen[v.data_ptr()] = v.numel() * v.element_size()
    return sum(seen.values())


def child(name: str, args) -> None:
    """In a fresh process: build one variant, drop the dense source, generate once; print MiB."""
    from transformers import LlamaForCausalLM  # noqa: F401  (import cost before the baseline)

    ids = prompt_ids(args)
    _trim()
    base = status_kib("VmRSS")
    dense = build_dense(args)
    model, _ = build_variant(name, dense, inplace=True, args=args)
    if name in WSQ_K or name == "wsqgrid":
        model = model.model
    del dense
    _trim()
    resident = status_kib("VmRSS") - base
    reset_peak()
    generate(model, ids, args.tokens)
    peak = status_kib("VmHWM") - base
    tensor_bytes = _state_bytes(model.state_dict().values())
    print(
        json.dumps(
            {"rss_mib": resident / 1024, "peak_mib": peak / 1024, "state_mb": tensor_bytes / 1e6}
        )
    )


def memory(name: str, args, argv: list[str]) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")  # fixed: big blocks go back on free
    root = os.path.dirname(os.path.dirname(os.path.abspath(wsq.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *argv, "--child", name],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--inter", type=int, default=2816)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--prompt", type=int, default=8, help="prompt length (random token ids)")
    ap.add_argument("--tokens", type=int, default=128, help="new tokens per generation")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="default: torch's current count")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--no-memory", action="store_true", help="skip the fresh-process RSS figures")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--grid-tolerance", type=float, default=0.01, help="wsqgrid: allowed drop of the cosine"
    )
    ap.add_argument("--json", metavar="PATH")
    add_cap_argument(ap)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cap_all(args.cap)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.child:
        child(args.child, args)
        return
    names = [v for v in args.variants.split(",") if v]
    for v in names:
        if v not in VARIANTS:
            raise ValueError(f"--variants: unknown variant {v!r} (known: {', '.join(VARIANTS)})")
    if "fp32" not in names:
        names.insert(0, "fp32")
    env = machine()
    print(
        f"# {env['cpu']} | wsq ISA {env['isa']}, torch ISA {env['torch_isa']} | {env['threads']} "
        f"threads | torch {env['torch']}"
    )
    print(f"# wsq {env['wsq']} | commit {env['commit']} | ISA caps {env['isa_caps'] or 'none'}")
    dense = build_dense(args)
    n_params = sum(p.numel() for p in dense.parameters())
    print(
        f"# LlamaForCausalLM {n_params / 1e6:.1f}M params: hidden {args.hidden}, {args.layers} "
        f"layers, MLP {args.inter}, vocab {args.vocab}; prompt {args.prompt}, {args.tokens} new tokens"
    )
    ids = prompt_ids(args)
    models, bits, checks = {}, {}, []
    for v in names:
        m, b = build_variant(v, dense, args=args)
        if v in WSQ_K or v == "wsqgrid":
            checks.append(validate(v, dense, m, ids, args.tokens))
            m = m.model
        models[v], bits[v] = m, b
    if checks:
        print("\nvalidation against the dequantized twin (see module doc):")
        print_table(checks, list(checks[0]))
    for m in models.values():  # warm-up: lazy inits, thread pools, first-touch pages
        generate(m, ids, 4)
    times: dict[str, list[float]] = {v: [] for v in names}
    for _ in range(args.repeats):
        for v in names:
            t0 = time.perf_counter()
            generate(models[v], ids, args.tokens)
            times[v].append(time.perf_counter() - t0)
    del models
    gc.collect()
    rows = []
    base_tps = args.tokens / statistics.median(times["fp32"])
    child_argv = [a for a in argv if a != "--no-memory"]
    if args.threads is None:
        child_argv += ["--threads", str(torch.get_num_threads())]
    for v in names:
        tps = args.tokens / statistics.median(times[v])
        row = {
            "variant": v,
            "bits": bits[v],
            "tokens/s": tps,
            "x fp32": tps / base_tps,
            "x int8": tps * statistics.median(times["int8"]) / args.tokens
            if "int8" in times
            else None,
            "s per run": statistics.median(times[v]),
        }
        if not args.no_memory:
            mem = memory(v, args, child_argv)
            row.update(
                {
                    "RSS MiB": mem["rss_mib"],
                    "peak MiB": mem["peak_mib"],
                    "state MB": mem["state_mb"],
                }
            )
        rows.append(row)
    print(f"\ngenerate {args.tokens} tokens at batch 1, median of {args.repeats} (round-robin):")
    print_table(rows, list(rows[0]))
    targets = decode_targets(rows, checks, env)
    if targets:
        print("\nissue 19 decode targets, read off this run (see bench/_targets.py):")
        print_table(targets, list(targets[0]))
    write_json(
        args.json,
        {
            "machine": env,
            "config": {k: v for k, v in vars(args).items() if k not in ("json", "child")},
            "params": n_params,
            "validation": checks,
            "rows": rows,
            "targets": targets,
            "times_s": times,
        },
    )


if __name__ == "__main__":
    main()
