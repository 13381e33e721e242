"""Optimisers and schedules: known updates, state save/restore."""
import math

import numpy as np
import pytest
from hypothesis import assume, example, given, settings, strategies as st

from mnistcnn.engine.optim import SGD, Adam, AdamW, Schedule


def quadratic_run(opt, steps=200):
    p = {"0.W": np.array([3.0, -2.0])}
    for _ in range(steps):
        opt.step(p, {"0.W": 2 * p["0.W"]})
    return p["0.W"]


@pytest.mark.parametrize("opt", [SGD(0.1), SGD(0.05, momentum=0.9), SGD(0.05, momentum=0.9, nesterov=True),
                                 Adam(0.1), AdamW(0.1, weight_decay=0.01)])
def test_optimisers_minimise_a_quadratic(opt):
    assert np.abs(quadratic_run(opt)).max() < 1e-2


def test_sgd_momentum_matches_hand_computation():
    opt = SGD(0.1, momentum=0.9)
    p = {"0.W": np.array([1.0])}
    opt.step(p, {"0.W": np.array([1.0])})   # v = 1, p = 0.9
    opt.step(p, {"0.W": np.array([1.0])})   # v = 1.9, p = 0.71
    assert np.allclose(p["0.W"], 0.71)


def test_adam_first_step_is_lr_times_sign():
    p = {"0.W": np.array([1.0, -1.0]), "0.b": np.array([0.5])}
    Adam(0.01).step(p, {"0.W": np.array([5.0, -0.1]), "0.b": np.array([2.0])})
    assert np.allclose(p["0.W"], [0.99, -0.99]) and np.allclose(p["0.b"], [0.49])


def test_weight_decay_touches_only_weights():
    p = {"0.W": np.array([1.0]), "0.b": np.array([1.0])}
    SGD(0.1, weight_decay=0.5).step(p, {"0.W": np.zeros(1), "0.b": np.zeros(1)})
    assert np.allclose(p["0.W"], 0.95) and np.allclose(p["0.b"], 1.0)


@pytest.mark.parametrize("cls", [lambda: SGD(0.1, momentum=0.9), lambda: Adam(0.1)])
def test_state_save_restore_continues_identically(cls):
    a, p = cls(), {"0.W": np.array([3.0, -2.0])}
    for _ in range(5):
        a.step(p, {"0.W": 2 * p["0.W"]})
    b = cls()
    b.load_state_dict(a.state_dict())
    q = {"0.W": p["0.W"].copy()}
    for _ in range(5):
        a.step(p, {"0.W": 2 * p["0.W"]})
        b.step(q, {"0.W": 2 * q["0.W"]})
    assert np.array_equal(p["0.W"], q["0.W"])


def test_step_and_cosine_schedules_give_their_rates_at_each_step():
    s = Schedule(1.0, steps_per_epoch=10, epochs=10, type="step", step_epochs=3, gamma=0.5)
    assert s(0) == 1.0 and s(29) == 1.0 and s(30) == 0.5 and s(60) == 0.25
    c = Schedule(1.0, 10, 10, type="cosine", warmup_epochs=1, min_lr=0.1)
    assert c(0) == pytest.approx(0.1) and c(9) == pytest.approx(1.0)
    assert c(10) == pytest.approx(1.0) and c(99) < 0.11
    mid = 10 + 45
    assert c(mid) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert Schedule(0.3, 5, 2)(7) == 0.3


def pytorch_one_cycle(step, total, max_lr, pct_start=0.3, div_factor=25.0, final_div_factor=1e4,
                      base_momentum=0.85, max_momentum=0.95):
    """PyTorch's OneCycleLR (cosine annealing, two phases), transcribed from its get_lr."""
    initial_lr = max_lr / div_factor
    phases = [{"end_step": float(pct_start * total) - 1, "start_lr": initial_lr, "end_lr": max_lr,
               "start_momentum": max_momentum, "end_momentum": base_momentum},
              {"end_step": total - 1, "start_lr": max_lr, "end_lr": initial_lr / final_div_factor,
               "start_momentum": base_momentum, "end_momentum": max_momentum}]

    def anneal(start, end, pct):
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    start_step = 0
    for i, phase in enumerate(phases):
        end_step = phase["end_step"]
        if step <= end_step or i == len(phases) - 1:
            pct = (step - start_step) / (end_step - start_step)
            return (anneal(phase["start_lr"], phase["end_lr"], pct),
                    anneal(phase["start_momentum"], phase["end_momentum"], pct))
        start_step = phase["end_step"]


@pytest.mark.parametrize("steps_per_epoch, epochs, pct_start", [(10, 3, 0.3), (469, 2, 0.25), (7, 1, 0.5)])
def test_one_cycle_draws_pytorch_s_curve_for_the_rate_and_the_momentum(steps_per_epoch, epochs, pct_start):
    schedule = Schedule(0.01, steps_per_epoch, epochs, type="onecycle", pct_start=pct_start)
    total = steps_per_epoch * epochs
    for step in range(total):
        lr, momentum = pytorch_one_cycle(step, total, 0.01, pct_start)
        assert schedule(step) == pytest.approx(lr, rel=1e-12)
        assert schedule.momentum(step) == pytest.approx(momentum, rel=1e-12)
    assert schedule(0) == pytest.approx(0.01 / 25) and schedule(total - 1) == pytest.approx(0.01 / 25 / 1e4)
    assert 0.009 < max(schedule(step) for step in range(total)) <= 0.01  # the peak, or the steps beside it
    assert schedule.momentum(0) == pytest.approx(0.95) and schedule.momentum(total - 1) == pytest.approx(0.95)


def test_a_one_cycle_rise_of_one_step_is_at_the_peak_on_that_step():
    # pct_start of 10 steps is 1: the rise ends where it starts, at the peak rate and the base momentum
    schedule = Schedule(1.0, steps_per_epoch=10, epochs=1, type="onecycle", pct_start=0.1)
    assert schedule(0) == pytest.approx(1.0) and schedule.momentum(0) == pytest.approx(0.85)


def test_other_schedules_leave_the_momentum_alone():
    assert Schedule(0.1, 10, 2, type="cosine").momentum(3) is None
    assert Schedule(0.1, 10, 2, type="onecycle", cycle_momentum=False).momentum(3) is None


@pytest.mark.parametrize("kind", ["ema", "swa"])
def test_weight_average_matches_hand_computation_and_restores(kind):
    from mnistcnn.engine.optim import WeightAverage

    snapshots = [np.array([1.0, 4.0]), np.array([3.0, 0.0]), np.array([8.0, 2.0])]
    average = WeightAverage(kind, decay=0.9)
    for snapshot in snapshots[:2]:
        average.update({"0.W": snapshot})
    again = WeightAverage(kind, decay=0.9)
    again.load_state_dict(average.state_dict())
    for each in (average, again):
        each.update({"0.W": snapshots[2]})
    if kind == "swa":
        expected = np.mean(snapshots, axis=0)
    else:
        expected = snapshots[0] + 0.1 * (snapshots[1] - snapshots[0])
        expected = expected + 0.1 * (snapshots[2] - expected)
    assert np.allclose(average.average["0.W"], expected) and average.count == 3
    assert np.array_equal(again.average["0.W"], average.average["0.W"]) and again.count == 3


@pytest.mark.parametrize("path", ["plain", "plan"])
def test_recomputed_batchnorm_statistics_are_the_mean_over_the_batches(path):
    from mnistcnn.engine.fast.plan import Plan
    from mnistcnn.engine.model import Sequential, recompute_batchnorm

    model = Sequential.from_config([{"type": "batchnorm", "momentum": 0.8}], [3], dtype=np.float64)
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc, 2.0, size=(16, 3)) for loc in (0.0, 1.0, 5.0)]
    recompute_batchnorm(model, iter(batches), rng, Plan(model).fold_batchnorm_statistics if path == "plan" else None)
    norm = model.layers[0]
    assert np.allclose(norm.buffers["running_mean"], np.mean([b.mean(axis=0) for b in batches], axis=0))
    assert np.allclose(norm.buffers["running_var"], np.mean([b.var(axis=0, ddof=1) for b in batches], axis=0))
    assert norm.momentum == 0.8


def test_sgd_nesterov_step_matches_hand_computation():
    opt = SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.5)
    p = {"0.W": np.array([2.0])}
    opt.step(p, {"0.W": np.array([1.0])})  # g = 1 + 0.5*2 = 2, v = 2, p = 2 - 0.1*(2 + 0.9*2) = 1.62
    assert np.allclose(p["0.W"], 1.62)
    opt.step(p, {"0.W": np.array([1.0])})  # g = 1 + 0.81 = 1.81, v = 1.8 + 1.81 = 3.61, p -= 0.1*(1.81 + 3.249)
    assert np.allclose(p["0.W"], 1.62 - 0.1 * (1.81 + 0.9 * 3.61))


def test_adam_equals_pytorch_form_with_eps_scaled_by_the_bias_correction():
    beta1, beta2, eps, lr = 0.9, 0.999, 1e-3, 0.01  # a large eps, so that its placement shows
    rng = np.random.default_rng(0)
    params = {"0.W": rng.normal(size=5)}
    q, m, v = params["0.W"].copy(), np.zeros(5), np.zeros(5)
    opt = Adam(lr, beta1, beta2, eps)
    for t in range(1, 4):
        g = rng.normal(size=5) * 1e-3
        opt.step(params, {"0.W": g})
        m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        q -= lr * m_hat / (np.sqrt(v_hat) + eps / math.sqrt(1 - beta2 ** t))
        np.testing.assert_allclose(params["0.W"], q, rtol=1e-12)


def test_step_decay_counts_from_the_end_of_the_warm_up():
    s = Schedule(1.0, steps_per_epoch=10, epochs=6, type="step", warmup_epochs=2, step_epochs=1, gamma=0.5)
    assert s(0) == pytest.approx(0.05) and s(19) == 1.0  # warm-up: lr / 20 up to lr
    assert s(20) == 1.0 and s(29) == 1.0 and s(30) == 0.5 and s(40) == 0.25  # as SequentialLR(warm-up, StepLR)


def written_out_updates(kind, params, gradients, rates, momentum=0.0, nesterov=False, weight_decay=0.0,
                        beta1=0.9, beta2=0.999, eps=1e-8):
    """The parameters after one update per (gradients, rate), each optimiser's formula written
    out step by step (PyTorch's SGD; Adam in Kingma and Ba's form with both bias corrections in
    the step size; AdamW's decay decoupled, before the step), weight decay on "W" keys only."""
    params = {key: p.copy() for key, p in params.items()}
    first = {key: np.zeros_like(p) for key, p in params.items()}   # SGD's velocity, Adam's m
    second = {key: np.zeros_like(p) for key, p in params.items()}  # Adam's v
    for t, (grads, lr) in enumerate(zip(gradients, rates), start=1):
        for key, p in params.items():
            decay = weight_decay if key.endswith(".W") else 0.0
            g = grads[key] + (0.0 if kind == "adamw" else decay) * p
            if kind == "sgd":
                first[key] = momentum * first[key] + g
                step = g + momentum * first[key] if nesterov else (first[key] if momentum else g)
                params[key] = p - lr * step
                continue
            if kind == "adamw":
                p = p - lr * decay * p
            first[key] = beta1 * first[key] + (1 - beta1) * g
            second[key] = beta2 * second[key] + (1 - beta2) * g ** 2
            rate = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
            params[key] = p - rate * first[key] / (np.sqrt(second[key]) + eps)
    return params


@pytest.mark.parametrize("kind,options", [
    ("sgd", {}), ("sgd", {"weight_decay": 0.1}), ("sgd", {"momentum": 0.9}),
    ("sgd", {"momentum": 0.8, "nesterov": True, "weight_decay": 0.05}),
    ("adam", {}), ("adam", {"weight_decay": 0.1}), ("adam", {"beta1": 0.5, "beta2": 0.9, "eps": 1e-3}),
    ("adamw", {"weight_decay": 0.1}), ("adamw", {"weight_decay": 0.3, "beta1": 0.8}),
])
def test_each_optimiser_steps_as_its_formula(kind, options):
    """Five steps at changing rates (as a schedule gives them), gradients of either sign and of
    sizes far apart; the decay touches W, never b."""
    rng = np.random.default_rng(0)
    start = {"0.W": rng.normal(size=(3, 4)), "0.b": rng.normal(size=4)}
    gradients = [{key: rng.normal(size=p.shape) * 10.0 ** rng.integers(-3, 2, p.shape) for key, p in start.items()}
                 for _ in range(5)]
    rates = [0.1, 0.05, 0.2, 0.01, 0.1]
    optimizer = {"sgd": SGD, "adam": Adam, "adamw": AdamW}[kind](**options)
    params = {key: p.copy() for key, p in start.items()}
    for grads, lr in zip(gradients, rates):
        optimizer.step(params, grads, lr=lr)
    want = written_out_updates(kind, start, gradients, rates, **options)
    for key in start:
        np.testing.assert_allclose(params[key], want[key], rtol=1e-12, atol=1e-15, err_msg=key)


def test_adamw_decay_is_decoupled_from_the_gradient():
    """With a zero gradient Adam's step is zero: AdamW then shrinks W by exactly lr * weight_decay
    of itself, and leaves b; Adam's L2 decay instead turns into a step of about lr, the size of
    any Adam step, whatever the weight."""
    W, b = np.array([4.0, -0.5]), np.array([2.0])
    params = {"0.W": W.copy(), "0.b": b.copy()}
    AdamW(weight_decay=0.1).step(params, {"0.W": np.zeros(2), "0.b": np.zeros(1)}, lr=0.01)
    np.testing.assert_allclose(params["0.W"], W * (1 - 0.01 * 0.1), rtol=1e-15)
    np.testing.assert_array_equal(params["0.b"], b)
    coupled = {"0.W": W.copy()}
    Adam(weight_decay=0.1).step(coupled, {"0.W": np.zeros(2)}, lr=0.01)
    np.testing.assert_allclose(coupled["0.W"], W - 0.01 * np.sign(W), rtol=1e-4)  # eps aside


@pytest.mark.parametrize("make,attribute", [(lambda: SGD(0.1, momentum=0.9), "momentum"), (lambda: Adam(0.1), "beta1")])
def test_set_momentum_sets_what_the_next_step_uses(make, attribute):
    """One-cycle's momentum reaches SGD's momentum and Adam's beta1."""
    optimizer = make()
    optimizer.set_momentum(0.5)
    assert getattr(optimizer, attribute) == 0.5
    options = {"momentum": 0.5} if attribute == "momentum" else {"beta1": 0.5}
    kind = "sgd" if attribute == "momentum" else "adam"
    params, grads = {"0.W": np.array([1.0, -2.0])}, [{"0.W": np.array([0.3, 0.1])}, {"0.W": np.array([-0.2, 0.4])}]
    start = {"0.W": params["0.W"].copy()}
    for g in grads:
        optimizer.step(params, g, lr=0.1)
    np.testing.assert_allclose(params["0.W"], written_out_updates(kind, start, grads, [0.1, 0.1], **options)["0.W"],
                               rtol=1e-12)


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(["constant", "step", "cosine"]), steps_per_epoch=st.integers(1, 12),
       epochs=st.integers(1, 6), warmup_epochs=st.sampled_from([0.0, 0.3, 1.0, 2.5]),
       step_epochs=st.integers(1, 3), gamma=st.sampled_from([0.1, 0.5]), min_lr=st.sampled_from([0.0, 0.01]))
@example(kind="cosine", steps_per_epoch=4, epochs=1, warmup_epochs=1.0, step_epochs=1, gamma=0.1, min_lr=0.01)
def test_schedules_give_their_formula_at_every_step(kind, steps_per_epoch, epochs, warmup_epochs, step_epochs, gamma,
                                                   min_lr):
    """A warm-up of equal steps up to the base rate, then: the base rate (constant); times
    gamma every step_epochs (step); half a cosine from the base rate towards min_lr, over the
    steps left (cosine), each counted from the warm-up's end. The config refuses a warm-up
    longer than the run."""
    assume(warmup_epochs <= epochs)
    base = 0.1
    schedule = Schedule(base, steps_per_epoch, epochs, type=kind, warmup_epochs=warmup_epochs,
                        step_epochs=step_epochs, gamma=gamma, min_lr=min_lr)
    total, warm = epochs * steps_per_epoch, schedule.warmup_steps
    assert abs(warm - warmup_epochs * steps_per_epoch) <= 0.5  # the nearest whole step
    rates = [schedule(step) for step in range(total + 3)]  # a few past the end: a resumed run's
    for step in range(min(warm, len(rates))):
        assert rates[step] == pytest.approx(base * (step + 1) / warm, rel=1e-12)
    after = rates[warm:]
    if not after:
        return
    assert after[0] == pytest.approx(base, rel=1e-12)
    if kind == "constant":
        assert after == pytest.approx([base] * len(after), rel=1e-12)
    elif kind == "step":
        period = step_epochs * steps_per_epoch
        assert after == pytest.approx([base * gamma ** (k // period) for k in range(len(after))], rel=1e-12)
    else:
        span = max(total - warm, 1)
        assert all(later <= earlier + 1e-15 for earlier, later in zip(after, after[1:]))
        assert all(rate >= min_lr - 1e-15 for rate in after) and after[-1] == pytest.approx(min_lr, abs=1e-15)
        # half a cosine: rates k steps from either end lie symmetric about the midpoint
        for k in range(span + 1):
            assert (after[k] - min_lr) + (after[span - k] - min_lr) == pytest.approx(base - min_lr, rel=1e-9)
