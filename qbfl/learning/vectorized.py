"""All clients' local round at once: batched GEMMs over stacked parameters, vmap for DP (Section 4.3, DESIGN.md §5 step 2)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from qbfl.errors import InvalidUpdate
from qbfl.learning.attacks import Attack
from qbfl.learning.models import FCNN, LeNet5
from qbfl.learning.mpo import MPOLinear
from qbfl.learning.training import TrainConfig, batch_order

Params = dict[str, torch.Tensor]

# Without DP: "batched" (batched GEMMs over per-client dense weights, the default) or "vmap"
# (torch.func.vmap over the input-side forward: the first vectorised version, kept to measure
# against). With DP, per-sample gradients always come from vmap.
METHODS = ("batched", "vmap")

# What one (ε, δ) budget covers: the whole run (default) or each round (the paper's reading).
DP_ACCOUNTING = ("run", "round")

# Opacus' DPOptimizer: clip factor C / (‖g_i‖ + 1e-6), capped at 1.
_CLIP_EPS = 1e-6


@dataclass(frozen=True, kw_only=True)
class VectorDPConfig:
    """DP-SGD of every client, vectorised; σ and the ε accounting come from Opacus' accountant.

    `sample_rate` is batch / samples per client and `steps_per_round` the batches of one
    epoch; the noise multiplier is Opacus' `get_noise_multiplier` at (target ε, δ) for
    `accounting="run"` over the whole run (the default, the honest privacy claim: ε = 4 is what
    a client spends in all), for `accounting="round"` over one round's steps only (the paper's
    reading of Section 5.2, "noise satisfying (ε = 4, δ = 1e-5)-DP added in each training round":
    each round's release is (4, 1e-5)-DP and the whole run composes to far more, which the
    accountant reports).
    """

    target_epsilon: float = 4.0
    target_delta: float = 1e-5
    max_grad_norm: float = 1.0
    total_rounds: int
    accountant: str = "prv"
    accounting: str = "run"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target_epsilon) and self.target_epsilon > 0):
            raise ValueError(f"target_epsilon must be positive, got {self.target_epsilon}")
        if not 0 < self.target_delta < 1:
            raise ValueError(f"target_delta must be in (0, 1), got {self.target_delta}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be positive, got {self.max_grad_norm}")
        if self.total_rounds < 1:
            raise ValueError(f"total_rounds must be >= 1, got {self.total_rounds}")
        if self.accountant not in ("prv", "rdp"):
            raise ValueError(f"accountant must be 'prv' or 'rdp', got {self.accountant!r}")
        if self.accounting not in DP_ACCOUNTING:
            raise ValueError(
                f"accounting must be one of {', '.join(DP_ACCOUNTING)}, got {self.accounting!r}"
            )

    @property
    def calibrated_rounds(self) -> int:
        """The rounds that one (target ε, δ) budget covers: all of them, or one."""
        return self.total_rounds if self.accounting == "run" else 1


class DPAccountant:
    """Opacus' accountant for one client's DP-SGD: every client takes the same steps at the same rate."""

    def __init__(self, dp: VectorDPConfig, *, sample_rate: float, steps_per_round: int) -> None:
        from opacus.accountants import create_accountant
        from opacus.accountants.utils import get_noise_multiplier

        self.dp = dp
        self.sample_rate = sample_rate
        self.steps_per_round = steps_per_round
        self.noise_multiplier = float(
            get_noise_multiplier(
                target_epsilon=dp.target_epsilon,
                target_delta=dp.target_delta,
                sample_rate=sample_rate,
                steps=dp.calibrated_rounds * steps_per_round,
                accountant=dp.accountant,
            )
        )
        self._accountant = create_accountant(dp.accountant)
        self.rounds_done = 0

    def record_round(self) -> None:
        # Opacus' accountants merge consecutive steps with equal (σ, q) into one history
        # entry; doing the same keeps PRV's get_epsilon one composition (100 entries: 22 s).
        self.rounds_done += 1
        steps = self.rounds_done * self.steps_per_round
        self._accountant.history = [(self.noise_multiplier, self.sample_rate, steps)]

    def spent_epsilon(self) -> float:
        """ε one client has spent over all rounds so far, composed by the accountant at δ."""
        if self.rounds_done == 0:
            return 0.0
        return float(self._accountant.get_epsilon(delta=self.dp.target_delta))

    def round_epsilon(self) -> float:
        """ε of one round's release alone (≈ target ε under `accounting="round"`)."""
        from opacus.accountants import create_accountant

        one = create_accountant(self.dp.accountant)
        one.history = [(self.noise_multiplier, self.sample_rate, self.steps_per_round)]
        return float(one.get_epsilon(delta=self.dp.target_delta))


def contract_halves(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """The dense (N_in, N_out) weight of MPO cores, the same matrix as `mpo.contract`, in a cheaper order.

    Each half of the chain is merged first (small tensors), then one GEMM over the middle
    bond and a single permute with contiguous runs of ΠJ_right. `mpo.contract` ends with a
    2n-d permute whose innermost runs are J_n long: under vmap over 10 clients that permute
    and its backward were half the step time (profiled: 2.1x faster step here).
    """
    return batched_dense_weight([core.unsqueeze(0) for core in cores])[0]


class _InputSideMPOLinear(MPOLinear):
    """MPOLinear that contracts the input through the two halves and never forms the dense weight.

    For DP: a per-sample gradient of the dense weight is a full N_in x N_out matrix per
    sample; through the halves it costs ~2x the ~160k MACs of this forward per sample.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cores = self.cores
        if len(cores) == 1:
            return F.linear(x, contract_halves(cores).T, self.bias)
        half = len(cores) // 2
        left = _batched_merge([core.unsqueeze(0) for core in cores[:half]])[0]
        right = _batched_merge([core.unsqueeze(0) for core in cores[half:]])[0]
        _, a, b, _ = left.shape
        _, c, e, _ = right.shape
        grid = x.reshape(*x.shape[:-1], a, c)
        partial = torch.einsum("...ac,abd->...cbd", grid, left[0])
        out = torch.einsum("...cbd,dce->...be", partial, right[..., 0])
        return out.reshape(*x.shape[:-1], b * e) + self.bias


def _with_input_side_contraction(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if type(module) is MPOLinear:
            module.__class__ = _InputSideMPOLinear
    return model


def _batched_merge(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Contract a run of MPO cores into one, C clients at once: (C, D_l, I, J, D_r) -> (C, D_l, ΠI, ΠJ, D_r)."""
    merged = cores[0]
    for core in cores[1:]:
        c, d_l, i, j, d = merged.shape
        _, _, i2, j2, d_r = core.shape
        prod = torch.bmm(
            merged.reshape(c, d_l * i * j, d), core.reshape(c, d, i2 * j2 * d_r)
        ).reshape(c, d_l, i, j, i2, j2, d_r)
        merged = prod.permute(0, 1, 2, 4, 3, 5, 6).reshape(c, d_l, i * i2, j * j2, d_r)
    return merged


def batched_dense_weight(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Each client's dense (N_in, N_out) MPO weight, (C, N_in, N_out): `contract_halves` batched.

    One bmm over the middle bond and one permute copy per client and step; the data then
    goes through a plain batched GEMM (~95 GFLOP/s on one core of the dev VM, against ~55 for
    the input-side einsums under vmap; docs/bench-simulator.md).
    """
    c = cores[0].shape[0]
    if len(cores) == 1:
        _, _, i, j, _ = cores[0].shape
        return cores[0].reshape(c, i, j)
    half = len(cores) // 2
    left, right = _batched_merge(cores[:half]), _batched_merge(cores[half:])
    _, _, a, b, d = left.shape
    _, _, rows, e, _ = right.shape
    dense = torch.bmm(left.reshape(c, a * b, d), right.reshape(c, d, rows * e))
    return dense.reshape(c, a, b, rows, e).permute(0, 1, 3, 2, 4).reshape(c, a * rows, b * e)


def _batched_linear(layer: nn.Module, name: str, params: Params, h: torch.Tensor) -> torch.Tensor:
    """Layer `name` of every client on its own batch: h (C, B, N_in) -> (C, B, N_out)."""
    bias = params[f"{name}.bias"].unsqueeze(1)
    if isinstance(layer, MPOLinear):
        cores = [params[f"{name}.core{k}"] for k in range(len(layer.cores))]
        return torch.baddbmm(bias, h, batched_dense_weight(cores))
    if isinstance(layer, nn.Linear):
        return torch.baddbmm(bias, h, params[f"{name}.weight"].transpose(1, 2))
    raise TypeError(f"no batched form for layer {name} of type {type(layer).__name__}")


def _batched_mlp(
    model: nn.Module, names: Sequence[str], params: Params, h: torch.Tensor
) -> torch.Tensor:
    """Linear layers `names` with ReLU between them (FCNN, LeNet-5's head), every client at once."""
    for k, name in enumerate(names):
        if k:
            h = F.relu(h)
        h = _batched_linear(getattr(model, name), name, params, h)
    return h


def _grouped_conv_pool(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int
) -> torch.Tensor:
    """conv–ReLU–maxpool2 of C clients at once: h (B, C·C_in, H, W), weight (C, C_out, C_in, k, k).

    One conv2d with groups = C on the channel-stacked input: group c sees only client c's
    channels and weights, so each client's result is its own convolution. channels_last
    is ~30 % faster here for these few channels per group (measured on the 2-core VM).
    """
    c, c_out = weight.shape[:2]
    out = F.conv2d(
        h.contiguous(memory_format=torch.channels_last),
        weight.reshape(c * c_out, *weight.shape[2:]).contiguous(memory_format=torch.channels_last),
        bias.reshape(c * c_out),
        padding=padding,
        groups=c,
    )
    return F.max_pool2d(F.relu(out), 2)


def _stack(params: Params, n: int) -> Params:
    return {k: v.unsqueeze(0).expand(n, *v.shape).clone() for k, v in params.items()}


def _flat(params: Params, names: Sequence[str]) -> torch.Tensor:
    """(C, P) rows in `flatten_params` order (named_parameters order, row-major)."""
    first = params[names[0]]
    return torch.cat([params[k].reshape(first.shape[0], -1) for k in names], dim=1)


def _unflat(vec: torch.Tensor, template: Params) -> Params:
    out: Params = {}
    offset = 0
    for name, value in template.items():
        n = value.numel()
        out[name] = vec[offset : offset + n].view_as(value)
        offset += n
    return out


class VectorizedClients:
    """N clients of one task, trained together: one round costs a few batched GEMMs per step.

    Each client holds `samples` images (all clients the same count) and its own
    shuffling generator seeded by `seeds[i]`, consumed exactly as `train_local`
    consumes it (one `batch_order` per epoch), so client i's update equals
    `train_local(model, images[i], labels[i], cfg, generator=Generator().manual_seed(seeds[i]))`
    up to float rounding of the batched GEMMs. Attacks (DESIGN.md §7) act on the labels
    before training and on the update after, with a per-client attack generator.
    Clients are processed in chunks of `chunk_size` to keep temporaries in cache-friendly sizes.
    """

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        cfg: TrainConfig,
        *,
        seeds: Sequence[int],
        attacks: Mapping[int, Attack] | None = None,
        device: torch.device | None = None,
        chunk_size: int = 10,
        dp: VectorDPConfig | None = None,
        dp_seed: int = 0,
        method: str = "batched",
    ) -> None:
        if images.ndim < 3 or labels.ndim != 2 or images.shape[:2] != labels.shape:
            raise ValueError(
                f"images must be (N, samples, ...) and labels (N, samples); got "
                f"{tuple(images.shape)} and {tuple(labels.shape)}"
            )
        n_clients, samples = labels.shape
        if n_clients < 1 or samples < 1:
            raise ValueError(f"need at least one client and one sample, got {tuple(labels.shape)}")
        if len(seeds) != n_clients:
            raise ValueError(f"{len(seeds)} seeds for {n_clients} clients")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
        self.method = method
        attacks = dict(attacks or {})
        if any(not 0 <= i < n_clients for i in attacks):
            raise ValueError(f"attack indices {sorted(attacks)} outside [0, {n_clients})")
        self.device = device or torch.device("cpu")
        self.cfg = cfg
        self.n_clients = n_clients
        self.samples = samples
        self.chunk_size = chunk_size
        self.attacks = attacks
        # A private copy: functional_call never touches its parameters, but eval()/train() would.
        # Input-side MPO contraction: needed for DP (no per-sample dense weights) and, measured
        # in one process beside the dense-weight path, 14-28 % faster without DP at 25 clients.
        self._model = _with_input_side_contraction(copy.deepcopy(model))
        self._model.to(self.device).train()
        self._names = [name for name, _ in self._model.named_parameters()]
        self._images = images.to(self.device)
        self._labels = labels.to(self.device)
        self._shufflers = [torch.Generator().manual_seed(int(s)) for s in seeds]
        # A separate stream per client for attack noise, so attacking does not move the shuffle.
        self._attack_gens = {
            i: torch.Generator().manual_seed((int(seeds[i]) * 7919 + 1) % 2**63) for i in attacks
        }
        self.dp = dp
        self.accountant: DPAccountant | None = None
        self._noise_gen = torch.Generator(device=self.device).manual_seed(dp_seed)
        if dp is not None:
            steps = math.ceil(samples / cfg.batch_size) * cfg.epochs
            self.accountant = DPAccountant(
                dp, sample_rate=min(1.0, cfg.batch_size / samples), steps_per_round=steps
            )
        self._grad_fn = self._build_grad_fn()

    # -- per-step gradients ------------------------------------------------------------

    def _loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(self._model, params, (x,)), y)

    def _batched_grads(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> Params:
        """Per-client gradients of every client's mean loss on its batch, without vmap.

        x (C, B, 1, 28, 28), y (C, B). FCNN: the layers are batched GEMMs over per-client
        dense weights. LeNet-5: the two convolutions of all C clients are single grouped
        conv2d calls (vmap over conv2d was ~95 % of a Fashion-MNIST step), then the same
        batched head. One backward of Σ_c mean-CE_c gives each client its own gradient,
        because clients share no parameter.
        """
        c, b = y.shape
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            if isinstance(self._model, LeNet5):
                h = x.transpose(0, 1).reshape(b, c * x.shape[2], *x.shape[3:])
                h = _grouped_conv_pool(h, leaves["conv1.weight"], leaves["conv1.bias"], padding=2)
                h = _grouped_conv_pool(h, leaves["conv2.weight"], leaves["conv2.bias"], padding=0)
                h = h.reshape(b, c, -1).transpose(0, 1)  # (C, B, 400), LeNet's flatten order
                logits = _batched_mlp(self._model, ("fc1", "fc2", "fc3"), leaves, h)
            else:
                logits = _batched_mlp(self._model, ("fc1", "fc2"), leaves, x.reshape(c, b, -1))
            # Σ_c mean_b CE: the gradient wrt client c's parameters is client c's mean-loss gradient.
            loss = F.cross_entropy(logits.reshape(c * b, -1), y.reshape(-1), reduction="sum") / b
            grads = torch.autograd.grad(loss, list(leaves.values()))
        return dict(zip(leaves, grads, strict=True))

    def _build_grad_fn(self) -> Callable[..., Params]:
        if self.dp is None and self.method == "vmap":
            # (C clients) x (batch): torch.func over the input-side MPO forward.
            return vmap(grad(self._loss))  # type: ignore[no-any-return]
        if self.dp is None:
            if not isinstance(self._model, FCNN | LeNet5):
                raise TypeError(f"no vectorised trainer for {type(self._model).__name__}")
            return self._batched_grads

        def per_sample(params: Params, x: torch.Tensor, y: torch.Tensor) -> Params:
            return grad(self._loss)(params, x.unsqueeze(0), y.unsqueeze(0))  # type: ignore[no-any-return]

        # Per-sample gradients inside each client: vmap over samples inside vmap over clients.
        return vmap(vmap(per_sample, in_dims=(None, 0, 0)))  # type: ignore[no-any-return]

    def _private_grad(self, per_sample: Params) -> Params:
        """Opacus' DPOptimizer step on per-sample grads (C, B, ...): clip, sum, add N(0, σ²C²), / batch."""
        assert self.dp is not None and self.accountant is not None
        first = per_sample[self._names[0]]
        c, b = first.shape[:2]
        sq = torch.zeros(c, b, device=first.device)
        for name in self._names:
            sq += per_sample[name].reshape(c, b, -1).pow(2).sum(dim=2)
        clip = (self.dp.max_grad_norm / (sq.sqrt() + _CLIP_EPS)).clamp(max=1.0)
        std = self.accountant.noise_multiplier * self.dp.max_grad_norm
        out: Params = {}
        for name in self._names:
            g = per_sample[name]
            summed = torch.einsum("cb,cb...->c...", clip, g)
            noise = torch.randn(
                summed.shape, generator=self._noise_gen, device=summed.device, dtype=summed.dtype
            )
            # Opacus (fixed-size batches) divides by the expected batch size, also for a short last batch.
            out[name] = (summed + std * noise) / self.cfg.batch_size
        return out

    def _clipped(self, grads: Params, max_norm: float) -> Params:
        """torch.nn.utils.clip_grad_norm_ per client: scale by min(1, C / (‖g‖ + 1e-6))."""
        first = grads[self._names[0]]
        c = first.shape[0]
        sq = torch.zeros(c, device=first.device, dtype=first.dtype)
        for name in self._names:
            sq += grads[name].reshape(c, -1).pow(2).sum(dim=1)
        coef = (max_norm / (sq.sqrt() + _CLIP_EPS)).clamp(max=1.0)
        return {name: g * coef.reshape(c, *([1] * (g.ndim - 1))) for name, g in grads.items()}

    # -- one round -----------------------------------------------------------------------

    def _orders(self, clients: range) -> list[torch.Tensor]:
        """Per epoch a (C, samples) permutation, drawn as train_local draws it."""
        orders = []
        for _ in range(self.cfg.epochs):
            perms = [
                torch.cat(batch_order(self.samples, self.cfg.batch_size, self._shufflers[i]))
                for i in clients
            ]
            orders.append(torch.stack(perms).to(self.device))
        return orders

    def _poisoned_labels(self, clients: range, round: int) -> torch.Tensor:
        labels = self._labels[clients.start : clients.stop]
        if not any(i in self.attacks for i in clients):
            return labels
        rows = []
        for i in clients:
            row = self._labels[i]
            if i in self.attacks:
                row = self.attacks[i].poison_labels(
                    row, round=round, generator=self._attack_gens[i]
                )
            rows.append(row)
        return torch.stack(rows)

    def _train_chunk(self, start: Params, clients: range, round: int) -> torch.Tensor:
        cfg = self.cfg
        c = len(clients)
        params = _stack(start, c)
        initial = _flat(params, self._names)
        momentum: Params = {}
        images = self._images[clients.start : clients.stop]
        labels = self._poisoned_labels(clients, round)
        rows = torch.arange(c, device=self.device).unsqueeze(1)
        for order in self._orders(clients):
            for lo in range(0, self.samples, cfg.batch_size):
                idx = order[:, lo : lo + cfg.batch_size]
                x = images[rows, idx]
                y = labels[rows, idx]
                grads = self._grad_fn(params, x, y)
                if self.dp is not None:
                    grads = self._private_grad(grads)
                elif cfg.clip_norm is not None:
                    grads = self._clipped(grads, cfg.clip_norm)
                # torch.optim.SGD (dampening 0, no Nesterov), as train_local's optimizer does it.
                for name in self._names:
                    d_p = grads[name]
                    p = params[name]
                    if cfg.weight_decay:
                        d_p = d_p.add(p, alpha=cfg.weight_decay)
                    if cfg.momentum:
                        buf = momentum.get(name)
                        if buf is None:
                            buf = d_p.clone()
                            momentum[name] = buf
                        else:
                            buf.mul_(cfg.momentum).add_(d_p)
                        d_p = buf
                    p.add_(d_p, alpha=-cfg.lr)
        return _flat(params, self._names) - initial

    def train_round(self, global_params: torch.Tensor, *, round: int) -> torch.Tensor:
        """Every client's update d_i = w_i − w_global for this round: (N, P) float32 on the CPU.

        Row i is client i's update after its attack (if any), NaN/Inf where that client's
        training diverged. Momentum starts from zero
        each round, as in `train_local` (stateless clients, Section 4.3).
        """
        template = {name: p.detach() for name, p in self._model.named_parameters()}
        total = sum(v.numel() for v in template.values())
        if global_params.ndim != 1 or global_params.numel() != total:
            raise InvalidUpdate(
                f"global parameters of shape {tuple(global_params.shape)}, model needs ({total},)"
            )
        start = _unflat(global_params.to(self.device, torch.float32), template)
        chunks = []
        with torch.no_grad():
            for lo in range(0, self.n_clients, self.chunk_size):
                clients = range(lo, min(lo + self.chunk_size, self.n_clients))
                chunks.append(self._train_chunk(start, clients, round).cpu())
        updates = torch.cat(chunks)
        # A client whose SGD diverged yields a non-finite row; train_local would raise for that
        # client alone, so the caller decides (the simulator drops it like a missing upload).
        for i, attack in self.attacks.items():
            updates[i] = attack.poison_update(
                updates[i], round=round, generator=self._attack_gens[i]
            )
        if self.accountant is not None:
            self.accountant.record_round()
        return updates

    def spent_epsilon(self) -> float:
        """ε one client has spent so far (Opacus' accountant at the configured δ); 0 without DP."""
        return 0.0 if self.accountant is None else self.accountant.spent_epsilon()
