# Regenerates the literal reference numbers used in ObjectiveTests / OptimizerTests / ScheduleTests.
# Run: python3 Tests/scripts/objectives_fixtures.py  (needs torch); paste the printed literals.
import math, torch

torch.set_printoptions(precision=10)

# 1. AdamW: three steps on a 3-parameter tensor, lr 3e-4 then 1e-3, wd 0 and wd 0.1.
for wd in (0.0, 0.1):
    p = torch.tensor([0.5, -1.25, 2.0], dtype=torch.float32, requires_grad=True)
    opt = torch.optim.AdamW([p], lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd, foreach=False)
    grads = [[0.1, -0.2, 0.3], [-0.05, 0.4, 0.0], [1.5, -2.5, 1e-4]]
    lrs = [3e-4, 1e-3, 1e-3]
    for g, lr in zip(grads, lrs):
        for gr in opt.param_groups: gr['lr'] = lr
        p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
    st = opt.state[p]
    print(f"adamw wd={wd}: p={[float(x) for x in p.detach()]} m={[float(x) for x in st['exp_avg']]} v={[float(x) for x in st['exp_avg_sq']]}")

# 2. Clip grad norm.
g = torch.tensor([3.0, -4.0, 12.0])
p = torch.zeros(3, requires_grad=True); p.grad = g.clone()
n = torch.nn.utils.clip_grad_norm_([p], 1.0)
print("clip", float(n), [float(x) for x in p.grad])

# 3. Clip-search grid as the reference builds it.
eps = 1e-3
out = [(eps, 1)]
for w in [0.5, 0.6, 0.7, 0.8, 0.9]:
    for i in torch.arange(0, 1 - w + 0.05, 0.05):
        lo = torch.clamp(i, min=eps).item(); hi = torch.clamp(i + w, min=eps).item()
        if (lo, hi) not in out: out.append((lo, hi))
print("grid", len(out))
print("grid", ", ".join(f"({a!r}, {b!r})" for a, b in out))

# 4. torch unbiased var.
x = torch.tensor([0.5, 1.5, 0.0, 4.0, 2.25], dtype=torch.float64)
print("var", float(x.var()))

# 5. Normal quantile values (scipy-free: torch.special.ndtri).
for v in [1e-10, 1e-3, 0.025, 0.3, 0.5, 0.975, 1 - 1e-10]:
    print("ndtri", v, float(torch.special.ndtri(torch.tensor(v, dtype=torch.float64))))
