"""Round trip on the oldest supported torch (run by .ci/run against the installed wheel).

compress -> save -> load into a fresh architecture -> forward, plus a state_dict round trip and
torch.compile through the custom ops' fakes: the parts of torch that wsq uses (torch.library.custom_op
and register_fake, torch.uint16, Module state-dict hooks) on the floor version. Exits non-zero on any
difference.
"""

from __future__ import annotations

import os
import sys
import tempfile

import torch

import wsq


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Embedding(40, 16),
        torch.nn.Linear(16, 64),
        torch.nn.GELU(),
        torch.nn.Linear(64, 16),
    )


def main() -> None:
    floor = os.environ.get("WSQ_TORCH_FLOOR")
    if floor and torch.__version__.split("+")[0] != floor:
        sys.exit(f"floor_check: expected torch {floor}, got {torch.__version__}")
    assert "site-packages" in wsq.__file__, f"wsq imported from {wsq.__file__}, not the wheel"
    model = build()
    x = torch.randint(0, 40, (3, 5))
    for k, wide in ((200, False), (4000, True)):  # uint8 and uint16 indices
        c = wsq.compress(model, k=k)
        # each tensor is held at the width of the values it uses: a wide one runs uint16 paths
        assert (max(c.widths().values()) > 8) == wide, (k, c.widths())
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.wsq")
            wsq.save(c, path)
            loaded = wsq.load(path, build())
        y = c.model(x)
        assert torch.equal(loaded.model(x), y), "save/load changed the outputs"
        scaled = build()
        with torch.no_grad():
            for p in scaled.parameters():
                p.mul_(1.5)  # the same bins (uniform binning is scale-free), another codebook
        other = wsq.compress(scaled, k=k)
        assert not torch.equal(other.codebook, c.codebook)
        other.model.load_state_dict(c.model.state_dict())
        assert torch.equal(other.model(x), y), "state_dict round trip changed the outputs"
        ref = wsq.reference.fake_quant_model(model, k)
        torch.testing.assert_close(y, ref(x), rtol=1e-5, atol=1e-5)
    compiled = torch.compile(c.model, backend="eager", fullgraph=True)
    assert torch.equal(compiled(x), c.model(x)), "torch.compile (eager backend) differs"
    info = wsq.info()
    print(
        f"floor_check: torch {torch.__version__}, wsq {info['version']} ({info['cpu_isa']}, "
        f"cuda_built={info['cuda_built']}): compress/save/load/state_dict/compile round trips exact"
    )


if __name__ == "__main__":
    main()
