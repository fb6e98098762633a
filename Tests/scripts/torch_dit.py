"""PyTorch BD3-LM / MDLM / SEDD / AR diffusion transformer, written from the reference spec.

Used only to generate parity fixtures (make_model_fixtures.py) and to benchmark (bench/torch_train.py).
Float32 CPU. Parameter names and shapes are the reference's (spec section 1.5), so
`{"backbone." + k: v for k, v in DiT(...).state_dict().items()}` is a reference-compatible state_dict.

Layouts (`mode` argument of DiT.forward):
  "bd3"    training/eval of BD3-LM: input (B, 2L) = cat(x_t, x_0), mask M_BD | M_OBC | M_BC, both halves use
           rotary positions 0..L-1, output truncated to the x_t half (B, L, V).
  "full"   MDLM / SEDD: input (B, L), no mask (full bidirectional attention).
  "causal" AR: input (B, L), causal attention (the reference's DDiTBlockCausal, no adaLN, no sigma_map).
  "window" BD3-LM sampling without a KV cache: input (B, Lw) = clean blocks + current noisy block,
           mask = block_diff_mask[L:L+Lw, L:L+Lw] (pure block-causal), positions 0..Lw-1, all Lw rows returned.
"""
import math
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F

NEG_INF = -1000000.0  # the reference's neg_infinity (a finite constant, not -inf)


@dataclass
class DiTConfig:
    vocab_size: int
    hidden_size: int
    n_blocks: int
    n_heads: int
    cond_dim: int
    length: int            # L (model.length)
    block_size: int        # L' (BD3); = length for MDLM/SEDD, 1 for AR
    dropout: float = 0.0   # residual-branch dropout (reference 0.1 in training)
    causal: bool = False   # AR: causal blocks, no adaLN, no sigma_map
    cross_attn: bool = False  # BD3: 2L input + block-diffusion mask
    time_conditioning: bool = False  # SEDD: sigma drives adaLN (the caller passes zeros otherwise)
    attn_impl: str = "sdpa"  # "sdpa" (F.scaled_dot_product_attention, as the reference) or "naive"

    def as_dict(self):
        return asdict(self)


# ----------------------------------------------------------------------------------------------------------------
# masks

def block_diff_mask(n, block_size):
    """(2n, 2n) bool, True = attend. Rows/cols [0,n) are the noisy stream x_t, [n,2n) the clean stream x_0."""
    q = torch.arange(2 * n)[:, None]
    kv = torch.arange(2 * n)[None, :]
    x0_q, x0_kv = q >= n, kv >= n
    bq = torch.where(x0_q, (q - n) // block_size, q // block_size)
    bkv = torch.where(x0_kv, (kv - n) // block_size, kv // block_size)
    m_bd = (bq == bkv) & (x0_q == x0_kv)        # own block, same stream
    m_obc = (bq > bkv) & x0_kv & ~x0_q          # noisy block sees strictly earlier clean blocks
    m_bc = (bq >= bkv) & x0_kv & x0_q           # clean stream is block-causal
    return m_bd | m_obc | m_bc


def window_mask(n, block_size, window_len):
    """Sampling without KV cache: the clean-stream corner of the training mask (pure block-causal)."""
    return block_diff_mask(n, block_size)[n:n + window_len, n:n + window_len]


# ----------------------------------------------------------------------------------------------------------------
# layers (module/attribute names follow the reference so state_dict keys match)

class LayerNorm(nn.Module):
    """layer_norm without affine bias, eps 1e-5, then * weight."""
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.dim = dim

    def forward(self, x):
        return F.layer_norm(x.float(), [self.dim]) * self.weight


class EmbeddingLayer(nn.Module):
    def __init__(self, dim, vocab):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab, dim))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, idx):
        return self.embedding[idx]


def timestep_embedding(sigma, dim=256, max_period=10000.0):
    """cos first, then sin; freqs = exp(-ln(max_period) * arange(half) / half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = sigma[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, cond_dim, freq_dim=256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(freq_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))
        self.freq_dim = freq_dim

    def forward(self, sigma):
        return self.mlp(timestep_embedding(sigma, self.freq_dim))


class Rotary(nn.Module):
    def __init__(self, head_dim, base=10000):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim)))

    def cos_sin(self, seq_len):
        pos = torch.arange(seq_len, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)          # (S, d)
        return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rotary(x, cos, sin):
    """x (B, S, H, d); cos/sin (S, d). NeoX rotate-half style over the full head dim."""
    return x * cos[None, :, None, :] + rotate_half(x) * sin[None, :, None, :]


def attention(q, k, v, mask, causal, impl):
    """q,k,v (B, S, H, d) -> (B, S, H*d). mask: (S, S) bool (True = attend) or None."""
    B, S, H, d = q.shape
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))   # (B, H, S, d)
    if impl == "sdpa":
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                           scale=1.0 / math.sqrt(d))
    else:
        s = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        if causal:
            mask = torch.ones(S, S, dtype=torch.bool).tril()
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        o = torch.softmax(s, dim=-1) @ v
    return o.transpose(1, 2).reshape(B, S, H * d)


class DDiTBlock(nn.Module):
    """Diffusion block (adaLN) or, with adaLN=False, the AR block (DDiTBlockCausal)."""
    def __init__(self, dim, n_heads, cond_dim, adaLN, dropout, mlp_ratio=4):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * dim, dim))
        self.adaLN = adaLN
        if adaLN:
            self.adaLN_modulation = nn.Linear(cond_dim, 6 * dim)
            nn.init.zeros_(self.adaLN_modulation.weight)
            nn.init.zeros_(self.adaLN_modulation.bias)
        self.dropout = dropout
        self.last_ada = None   # the six (B, D) chunks of the last forward, for fixtures

    def qkv(self, h, cos, sin):
        B, S, _ = h.shape
        qkv = self.attn_qkv(h).view(B, S, 3, self.n_heads, -1)   # 'b s (three h d)'
        q, k, v = qkv.unbind(2)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def forward(self, x, cos, sin, c, mask, causal, split_n, impl):
        if self.adaLN:
            ada = self.adaLN_modulation(c)                      # (B, 6D)
            sh1, sc1, g1, sh2, sc2, g2 = ada[:, None].chunk(6, dim=-1)
            self.last_ada = [t[:, 0] for t in (sh1, sc1, g1, sh2, sc2, g2)]
            h = self.norm1(x) * (1 + sc1) + sh1
        else:
            h = self.norm1(x)
        if split_n is not None:
            # BD3 training: x_t half and x_0 half each get rotary positions 0..L-1
            q1, k1, v1 = self.qkv(h[:, :split_n], cos, sin)
            q2, k2, v2 = self.qkv(h[:, split_n:], cos, sin)
            q, k, v = torch.cat([q1, q2], 1), torch.cat([k1, k2], 1), torch.cat([v1, v2], 1)
        else:
            q, k, v = self.qkv(h, cos, sin)
        a = attention(q, k, v, mask, causal, impl)
        p, tr = self.dropout, self.training
        if self.adaLN:
            x = x + g1 * F.dropout(self.attn_out(a), p, tr)
            x = x + g2 * F.dropout(self.mlp(self.norm2(x) * (1 + sc2) + sh2), p, tr)
        else:
            x = x + F.dropout(self.attn_out(a), p, tr)
            x = x + F.dropout(self.mlp(self.norm2(x)), p, tr)
        return x


class DDiTFinalLayer(nn.Module):
    def __init__(self, dim, vocab, cond_dim, adaLN):
        super().__init__()
        self.norm_final = LayerNorm(dim)
        self.linear = nn.Linear(dim, vocab)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.adaLN = adaLN
        if adaLN:
            self.adaLN_modulation = nn.Linear(cond_dim, 2 * dim)
            nn.init.zeros_(self.adaLN_modulation.weight)
            nn.init.zeros_(self.adaLN_modulation.bias)
        self.last_ada = None

    def forward(self, x, c):
        x = self.norm_final(x)
        if self.adaLN:
            shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=-1)
            self.last_ada = [shift[:, 0], scale[:, 0]]
            x = x * (1 + scale) + shift
        return self.linear(x)


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.hidden_size
        adaLN = not cfg.causal
        self.vocab_embed = EmbeddingLayer(D, cfg.vocab_size)
        if adaLN:
            self.sigma_map = TimestepEmbedder(cfg.cond_dim)
        self.rotary_emb = Rotary(D // cfg.n_heads)
        self.blocks = nn.ModuleList(DDiTBlock(D, cfg.n_heads, cfg.cond_dim, adaLN, cfg.dropout)
                                    for _ in range(cfg.n_blocks))
        self.output_layer = DDiTFinalLayer(D, cfg.vocab_size, cfg.cond_dim, adaLN)
        if cfg.cross_attn:
            self.register_buffer("bd_mask", block_diff_mask(cfg.length, cfg.block_size), persistent=False)
        self.last_c = None

    def forward(self, idx, sigma=None, mode=None):
        cfg = self.cfg
        if mode is None:
            mode = "causal" if cfg.causal else ("bd3" if cfg.cross_attn else "full")
        x = self.vocab_embed(idx)
        c = None
        if not cfg.causal:
            if sigma is None:
                sigma = torch.zeros(idx.shape[0])
            c = F.silu(self.sigma_map(sigma))
        self.last_c = c
        split_n, mask, causal = None, None, False
        S = idx.shape[1]
        if mode == "bd3":
            n = cfg.length
            assert S == 2 * n
            split_n, mask = n, self.bd_mask
            cos, sin = self.rotary_emb.cos_sin(n)
        elif mode == "window":
            mask = window_mask(cfg.length, cfg.block_size, S)
            cos, sin = self.rotary_emb.cos_sin(S)
        elif mode == "full":
            cos, sin = self.rotary_emb.cos_sin(S)
        elif mode == "causal":
            causal = True
            cos, sin = self.rotary_emb.cos_sin(S)
        else:
            raise ValueError(mode)
        for blk in self.blocks:
            x = blk(x, cos, sin, c, mask, causal, split_n, cfg.attn_impl)
        logits = self.output_layer(x, c)
        if mode == "bd3":
            logits = logits[:, :cfg.length]
        return logits

    def reference_state_dict(self):
        """state_dict under the reference's Lightning/HF names (prefix 'backbone.')."""
        return {"backbone." + k: v for k, v in self.state_dict().items()}


def reinit_random(model, seed=0):
    """Parity init: nothing is zero, activations O(1) so that every piece (RoPE, mask, adaLN) moves the logits well
    above the fp32 tolerance. Spec 11.2 suggests normal(0, 0.02) for every weight, but with D=48 that makes the
    model almost insensitive (dropping RoPE changes the logits by only 4e-5), so instead:
      weight of a Linear (fan_in columns)  ~ N(0, 1/fan_in)        (adaLN, sigma_map and output linear included)
      bias                                  ~ N(0, 0.02^2)
      vocab_embed.embedding                 ~ N(0, 1)
      LayerNorm weight                      ~ 1 + N(0, 0.1^2)
    Parameters are drawn in named_parameters() order from torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name.endswith("norm_final.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.02)
            elif name == "vocab_embed.embedding":
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]))


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------------------------
# parameterisations and losses

def subs_logp(logits, xt, mask_id):
    """SUBS (spec 2.4): mask logit -= 1e6, log-softmax, carry-over rows for unmasked x_t (0 at x_t, -1e6 elsewhere)."""
    V = logits.shape[-1]
    bump = torch.zeros(V)
    bump[mask_id] = NEG_INF
    logits = logits + bump
    logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    unmasked = (xt != mask_id)[..., None]
    carry = torch.full_like(logp, NEG_INF).scatter(-1, xt[..., None], 0.0)
    return torch.where(unmasked, carry, logp)


def loglinear_noise(t):
    """(loss_scale, p) of the default schedule: p = t, loss_scale = -1/t."""
    return -1.0 / t, t


def diffusion_loss(logp, x0, t):
    """Per-token loss (spec 2.5): loss_scale * logp[x0] = (1/t) CE on masked tokens, exactly 0 elsewhere.
    Returns (lp, loss_tok)."""
    lp = logp.gather(-1, x0[..., None]).squeeze(-1)
    loss_scale, _ = loglinear_noise(t)
    return lp, loss_scale * lp


def reduce_train(loss_tok):
    """Training token_nll: sum over all tokens / (B*L) (BOS slot counts with loss 0)."""
    return loss_tok.sum() / loss_tok.numel()


def reduce_eval(loss_tok):
    """Eval token_nll (ignore_bos): position 0 removed from the denominator (its loss is 0 anyway)."""
    m = torch.ones_like(loss_tok)
    m[:, 0] = 0
    return (loss_tok * m).sum() / m.sum()


def ar_logp(logits, mask_id):
    """AR: logits[..., m] = -1e6 (set, not added), then log_softmax."""
    V = logits.shape[-1]
    keep = torch.ones(V, dtype=torch.bool)
    keep[mask_id] = False
    logits = torch.where(keep, logits, torch.tensor(NEG_INF))
    return torch.log_softmax(logits, dim=-1)


def ar_loss(logp, targets):
    """Per-token AR NLL -log p(x_{i+1} | x_<=i); mean over all B*(L-1) positions."""
    lp = logp.gather(-1, targets[..., None]).squeeze(-1)
    return lp, -lp


def sedd_log_score(logits, xt, sigma):
    """SEDD (spec 5): logits - log(expm1(sigma)) - log(V-1), then log_score[x_t] = 0. sigma (B,)."""
    V = logits.shape[-1]
    esm1 = torch.where(sigma < 0.5, torch.expm1(sigma), sigma.exp() - 1).log()
    ls = logits - esm1[:, None, None] - math.log(V - 1)
    return ls.scatter(-1, xt[..., None], 0.0)


def sedd_score_entropy(log_score, sigma, xt, x0, mask_id):
    """Score entropy per token (0 where x_t != m): sum_{y!=m} exp(s_y) - r s_{x0} + r(log r - 1), r = 1/expm1(sigma)."""
    V = log_score.shape[-1]
    masked = xt == mask_id
    r = (1.0 / torch.expm1(sigma))[:, None].expand_as(xt)
    neg = r * log_score.gather(-1, x0[..., None]).squeeze(-1)
    keep = torch.ones(V, dtype=torch.bool)
    keep[mask_id] = False
    pos = (log_score.exp() * keep).sum(-1)
    const = r * (r.log() - 1)
    return torch.where(masked, pos - neg + const, torch.zeros_like(pos))


def sedd_sigma(t):
    """bd3lms: sigma = min(-log(1-t), sigma_max), dsigma = -loss_scale * expm1(sigma) (= 1/(1-t) unclamped)."""
    sigma_max = -math.log(1e-3)
    sigma = torch.clamp(-torch.log(1 - t), max=sigma_max)
    dsigma = (1.0 / t) * torch.expm1(sigma)
    return sigma, dsigma
