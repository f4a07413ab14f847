"""The Triton kernels of the fused path, run by the Triton interpreter on the CPU, against the
torch path. (On a GPU machine the same test runs the compiled kernels when TRITON_INTERPRET is
unset and CUDA is present.)"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import os
import torch
from pfo import fused, triton_kernels
from tests.test_fused import fused_sequence_logprobs, grads, problem
assert triton_kernels.available(torch.device("cpu"))
results = {}
for backend in ("torch", "triton"):
    os.environ["PFO_FUSED_BACKEND"] = backend
    for bias in (True, False):
        args = problem(B=3, T=21, H=16, V=77, bias=bias, seed=4)
        out, leaves = grads(fused_sequence_logprobs, *args, chunk_tokens=9)
        (out * torch.tensor([0.5, -2.0, 1.0])).sum().backward()
        results[(backend, bias)] = (out.detach(), [l.grad for l in leaves])
for bias in (True, False):
    (a, ga), (b, gb) = results[("torch", bias)], results[("triton", bias)]
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    for x, y in zip(gb, ga):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
# the kernels themselves, on a wide vocabulary (several blocks per row) with extreme logits
z = torch.randn(5, 9000) * 30
y = torch.randint(0, 9000, (5,))
lse, tgt = triton_kernels.lse_and_target(z.clone(), y)
torch.testing.assert_close(lse, torch.logsumexp(z, -1), atol=1e-4, rtol=1e-5)
torch.testing.assert_close(tgt, z.gather(1, y[:, None]).squeeze(1))
g = torch.randn(5)
dz = triton_kernels.softmax_grad_(z.clone(), y, lse, g)
ref = -g[:, None] * torch.softmax(z, -1)
ref[torch.arange(5), y] += g
torch.testing.assert_close(dz, ref, atol=1e-6, rtol=1e-5)
print("triton-ok")
"""


def test_triton_kernels_match_torch_path_under_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "triton-ok" in out.stdout
