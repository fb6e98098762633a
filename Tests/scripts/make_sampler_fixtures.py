"""RNG-free sampler pieces (spec 4, 3.4, 5, 11.6) and noise schedules / loss reweightings (spec 2.2, 6), float64.

    python3 Tests/scripts/make_sampler_fixtures.py    # writes Fixtures/parity/{sampler,schedules}.safetensors

Every random draw the reference makes (U for Gumbel-max, u for first-hitting, the randint index) is an input of
the fixture, so the Swift side can replay it exactly. Layout: Tests/scripts/README.md.
"""
import json
import math
import os

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "BlockDiffusionTests", "Fixtures", "parity"))
F64 = torch.float64
V, MASK = 67, 66


# ----------------------------------------------------------------------------------------------------------------
# sampler pieces (formulas of the reference sampler, spec 4)

def gumbel_argmax(p, u):
    """_sample_categorical: argmax(p / (1e-10 - log(U + 1e-10))) (exponential race on unnormalised p)."""
    return (p / (1e-10 - torch.log(u + 1e-10))).argmax(dim=-1)


def nucleus(p, top_p):
    """_nucleus_sample on one row: sort descending, keep cumsum <= top_p, always keep top-1, renormalise.
    top_p == 1.0 returns p unchanged (the reference short-circuits)."""
    if top_p == 1.0:
        return p.clone()
    sp, si = p.sort(dim=-1, descending=True)
    keep = sp.cumsum(-1) <= top_p
    keep[..., 0] = True
    out = torch.zeros_like(p).scatter(-1, si, sp * keep)
    return out / out.sum(-1, keepdim=True)


def entropy_last(tokens, window=256):
    """_compute_entropy of the last `window` tokens: sum of entr(count/total) over distinct tokens (nats)."""
    x = tokens[-window:]
    _, counts = torch.unique(x, return_counts=True)
    f = counts.to(F64) / counts.sum()
    return float(-(f * f.log()).sum())


def sampler_tensors():
    g = torch.Generator().manual_seed(99)
    T = {}
    # Gumbel-max: N rows over V, with zeros (as after nucleus) that must never win
    N = 8
    p = torch.softmax(3 * torch.randn(N, V, generator=g, dtype=F64), -1)
    p[:, MASK] = 0.0
    zero = torch.rand(N, V, generator=g, dtype=F64) < 0.3
    p[zero] = 0.0
    p[:, 0] = torch.where(p[:, 0] == 0, torch.full((N,), 1e-3, dtype=F64), p[:, 0])
    p = p / p.sum(-1, keepdim=True)
    u = torch.rand(N, V, generator=g, dtype=F64)
    u[0, 5] = 0.0                     # U = 0 exactly: the 1e-10 guards keep it finite
    idx = gumbel_argmax(p, u)
    assert torch.all(p.gather(-1, idx[:, None]) > 0)
    T.update({"gumbel.p": p, "gumbel.u": u, "gumbel.index": idx})

    # nucleus: per-row top_p
    top = torch.tensor([0.9, 0.5, 0.99, 0.05, 1.0, 0.9, 0.7, 0.95], dtype=F64)
    pin = torch.softmax(2.5 * torch.randn(len(top), V, generator=g, dtype=F64), -1)
    pout = torch.stack([nucleus(pin[i], float(top[i])) for i in range(len(top))])
    assert int((pout[3] > 0).sum()) == 1          # top_p below the max prob keeps exactly the top-1
    assert torch.allclose(pout.sum(-1), torch.ones(len(top), dtype=F64))
    T.update({"nucleus.p_in": pin, "nucleus.top_p": top, "nucleus.p_out": pout})

    # first-hitting time update t <- t * u^(1/n)
    t = torch.tensor([1.0, 1.0, 0.73, 0.5, 0.2, 0.999, 0.05, 1.0], dtype=F64)
    uu = torch.rand(len(t), generator=g, dtype=F64)
    n = torch.tensor([4, 1, 3, 16, 2, 1023, 7, 1], dtype=torch.int64)
    T.update({"first_hitting.t": t, "first_hitting.u": uu, "first_hitting.n": n,
              "first_hitting.t_next": t * uu ** (1.0 / n.to(F64))})

    # first-hitting position choice: the draw-th masked position of the block (randint(0, num_masked) replayed)
    BS = 8
    blocks = torch.randint(0, V - 1, (N, BS), generator=g)
    mk = torch.rand(N, BS, generator=g) < 0.5
    mk[:, 3] = True
    blocks[mk] = MASK
    draws, pos = [], []
    for i in range(N):
        masked = (blocks[i] == MASK).nonzero()[:, 0]
        d = int(torch.randint(0, len(masked), (1,), generator=g))
        draws.append(d)
        pos.append(int(masked[d]))
    T.update({"pick.block": blocks, "pick.draw": torch.tensor(draws, dtype=torch.int64),
              "pick.position": torch.tensor(pos, dtype=torch.int64)})

    # DDPM (non-first-hitting) transition: q = p_x0 (1 - s/t), q[m] = s/t  (loglinear p(t) = t)
    px0 = torch.softmax(torch.randn(4, V, generator=g, dtype=F64), -1)
    px0[:, MASK] = 0
    px0 /= px0.sum(-1, keepdim=True)
    tt = torch.tensor([1.0, 0.5, 0.25, 0.01], dtype=F64)
    ss = tt - torch.tensor([0.2, 0.1, 0.25, 0.001], dtype=F64)
    mp = (ss / tt)[:, None]
    q = px0 * (1 - mp)
    q[:, MASK] = mp[:, 0]
    T.update({"ddpm.p_x0": px0, "ddpm.t": tt, "ddpm.s": ss, "ddpm.q": q})

    # entropy stop rule on the last 256 tokens (sequences of 300): stop iff entropy < 4
    seqs = [torch.randint(0, 1000, (300,), generator=g),              # high entropy
            torch.randint(0, 8, (300,), generator=g),                 # low
            torch.randint(0, 60, (300,), generator=g),                # near ln 60 = 4.09
            torch.cat([torch.randint(0, 1000, (44,), generator=g), torch.full((256,), 7)]),  # constant tail: 0
            torch.arange(300) % 50,                                   # 50 equally frequent... exactly? (256/50 no)
            torch.cat([torch.full((100,), 3), torch.randint(0, 200, (200,), generator=g)])]
    toks = torch.stack(seqs)
    ent = torch.tensor([entropy_last(s) for s in seqs], dtype=F64)
    assert ent[0] > 4 and ent[1] < 4 and ent[3] == 0
    T.update({"entropy.tokens": toks, "entropy.value": ent, "entropy.stop": (ent < 4).to(torch.uint8)})

    # SEDD analytic (Tweedie tau-leaping) update pieces, spec 5
    score = torch.exp(torch.randn(4, V, generator=g, dtype=F64))
    x = torch.tensor([MASK, MASK, 5, MASK], dtype=torch.int64)
    dsig = torch.tensor([0.01, 0.5, 0.3, 2.0], dtype=F64)
    stag = score * dsig.exp()[:, None]
    stag[:, MASK] += (1 - dsig.exp()) * score.sum(-1)
    edge = torch.exp(-dsig)[:, None] * torch.nn.functional.one_hot(x, V).to(F64)
    edge += torch.where(x == MASK, 1 - torch.exp(-dsig), torch.zeros_like(dsig))[:, None]
    T.update({"sedd.score": score, "sedd.x": x, "sedd.dsigma": dsig, "sedd.staggered": stag,
              "sedd.transition": edge, "sedd.probs": stag * edge})
    return T


# ----------------------------------------------------------------------------------------------------------------
# schedules (spec 2.2, NTUA fork spec 6)

EPS = 1e-3
LN2 = math.log(2.0)


def base_schedule(name, t):
    """-> p, dpdt, loss_scale  (loss_scale as the reference computes it)."""
    if name == "loglinear":
        return t.clone(), torch.ones_like(t), -1.0 / t
    if name == "square":
        p = torch.clamp(t ** 2, min=EPS)
        d = 2 * t                         # the reference's numerator; not zeroed in the clamped region (spec 10.9)
        return p, d, -d / p
    if name == "square_root":
        p = torch.clamp(t ** 0.5, min=EPS)
        d = 0.5 * t ** -0.5
        return p, d, -d / p
    if name == "log":
        p = torch.log1p(t) / LN2
        d = 1.0 / (LN2 * (1 + t))
        return p, d, -1.0 / (p * LN2 * (1 + t))
    if name == "cosine":
        p = 1 - (1 - EPS) * torch.cos(t * math.pi / 2)
        d = (1 - EPS) * torch.sin(t * math.pi / 2) * (math.pi / 2)
        return p, d, -d / (p + EPS)       # eps in the denominator (spec 10.10)
    raise ValueError(name)


def Phi(z):
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))


def Phi_inv(v):
    return math.sqrt(2.0) * torch.erfinv(2.0 * v - 1.0)


def truncnorm(u, mu, s, p_min=1e-5, u_eps=1e-6):
    """Truncated-normal quantile on [0,1] and dp/du (fork GaussianNoise._truncnorm_quantile_and_dpdu)."""
    u = u.clamp(u_eps, 1 - u_eps)
    a = torch.tensor((0.0 - mu) / s, dtype=F64)
    b = torch.tensor((1.0 - mu) / s, dtype=F64)
    Z = (Phi(b) - Phi(a)).clamp_min(1e-12)
    z = Phi_inv((Phi(a) + u * Z).clamp(u_eps, 1 - u_eps))
    p = (mu + s * z).clamp(p_min, 1 - p_min)
    pdf = (torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)).clamp_min(1e-12)
    return p, s * Z / pdf


def gaussian(t, mu=0.5, s=0.1):
    p, d = truncnorm(t, mu, s)
    return p, d, -d / p


def bimodal(t, progress, w1=0.7, mu1=0.15, s1=0.02, s2=0.08, m_start=0.4, m_end=0.85, tau_scale=3.0, u_eps=1e-6):
    tau = tau_scale * min(1.0, max(0.0, progress))
    mu2 = m_start + (m_end - m_start) * (1 - math.exp(-tau))
    u = t.clamp(u_eps, 1 - u_eps)
    first = u < w1
    p1, d1 = truncnorm((u / w1).clamp(u_eps, 1 - u_eps), mu1, s1)
    p2, d2 = truncnorm(((u - w1) / (1 - w1)).clamp(u_eps, 1 - u_eps), mu2, s2)
    p = torch.where(first, p1, p2)
    d = torch.where(first, d1 / w1, d2 / (1 - w1))
    return p, d, -d / p, mu2


def weights(a, da, k=0.0):
    """Noise._w of the fork: lambda = log(a/(1-a))."""
    lam = torch.log(a / (1 - a))
    mu = s = 2.4
    return {
        "edm": (1 / math.sqrt(2 * math.pi * s ** 2)) * torch.exp(-((lam - mu) ** 2) / (2 * s ** 2))
               * (torch.exp(-lam) + 0.25) / 0.25,
        "iddpm": 1 / torch.cosh(lam / 2),
        "sigmoid": 1 / (1 + torch.exp(-(-lam + k))),
        "fm": torch.exp(-lam / 2),
        "simple": -(1 - a) / da,
    }


def schedule_tensors():
    T = {}
    t = torch.tensor([1e-3, 0.25, 0.5, 1.0], dtype=F64)
    tw = torch.tensor([1e-3, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999], dtype=F64)
    T["t"], T["t_w"] = t, tw
    sigma_max = {"loglinear": -math.log1p(-(1 - EPS)), "gaussian": -math.log(1e-5), "bimodal_gaussian": -math.log(1e-5),
                 "bimodal_gaussian_progress50": -math.log(1e-5)}
    meta = {}

    def fill(name, fn):
        smax = sigma_max.get(name, math.inf)
        for key, tt in (("", t), ("w_", tw)):
            p, d, ls = fn(tt)[:3]
            if key == "":
                sigma = torch.clamp(-torch.log1p(-p), max=smax)
                T.update({f"{name}.p": p, f"{name}.dpdt": d, f"{name}.loss_scale": ls, f"{name}.sigma": sigma})
            else:
                # reweighting inputs as the fork computes them: sigma = min(-log1p(-p), sigma_max),
                # dsigma = -loss_scale * expm1(sigma), a = 1 - p, da = -dsigma * a
                sigma = torch.clamp(-torch.log1p(-p), max=smax)
                dsig = -ls * torch.expm1(sigma)
                a = 1 - p
                T[f"{name}.w.dsigma"] = dsig
                for wk, wv in weights(a, -dsig * a).items():
                    T[f"{name}.w.{wk}"] = wv
        meta[f"{name}.sigma_max"] = "inf" if math.isinf(smax) else repr(smax)

    for name in ("loglinear", "square", "square_root", "log", "cosine"):
        fill(name, lambda tt, name=name: base_schedule(name, tt))
    fill("gaussian", gaussian)
    fill("bimodal_gaussian", lambda tt: bimodal(tt, 0.0))
    fill("bimodal_gaussian_progress50", lambda tt: bimodal(tt, 0.5))
    meta["bimodal_gaussian_progress50.mu2"] = repr(bimodal(tw, 0.5)[3])
    # loglinear extras (spec 2.2 notes)
    T["loglinear.total_noise"] = -torch.log1p(-(1 - EPS) * t)
    T["loglinear.rate_noise"] = (1 - EPS) / (1 - (1 - EPS) * t)
    assert abs(T["loglinear.sigma"][-1].item() - 6.907755278982137) < 1e-12
    # simple weighting under loglinear gives w = t, so w * loss_scale = -1 (plain CE)
    assert torch.allclose(T["loglinear.w.simple"], tw)
    assert torch.allclose(T["loglinear.w.iddpm"], 2 * torch.sqrt(tw * (1 - tw)))
    assert torch.allclose(T["loglinear.w.sigmoid"], tw)
    assert torch.allclose(T["loglinear.w.fm"], torch.sqrt(tw / (1 - tw)))
    for k, v in T.items():
        assert not torch.isnan(v).any(), k
    return T, meta


def save(name, tensors, meta):
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    tmp = path + ".tmp"
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp,
              metadata={k: (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    size = os.path.getsize(path)
    assert size < 1_000_000
    print(f"wrote {name}: {len(tensors)} tensors, {size} bytes")


def main(check_only=False):
    s = sampler_tensors()
    sch, meta = schedule_tensors()
    if check_only:
        return
    save("sampler.safetensors", s, {"vocab_size": V, "mask_id": MASK, "float_dtype": "F64", "int_dtype": "I64",
                                    "bool_dtype": "U8", "generator": "Tests/scripts/make_sampler_fixtures.py"})
    meta.update({"float_dtype": "F64", "generator": "Tests/scripts/make_sampler_fixtures.py",
                 "eps": EPS, "gaussian": "mu 0.5 sigma 0.1 p_min 1e-5 u_eps 1e-6",
                 "bimodal_gaussian": "w1 0.7 mu1 0.15 sigma1 0.02 sigma2 0.08 m_start 0.4 m_end 0.85 tau_scale 3.0; "
                                     "progress = global_step/max_steps (0 and 0.5)"})
    save("schedules.safetensors", sch, meta)


if __name__ == "__main__":
    import sys
    main("--check" in sys.argv)
