"""Built-in simulator of consumer-loan applications with a binary ``default`` target.

Public API: ``simulate_chunks`` (an iterator of frames of at most ``chunk_rows`` rows),
``simulate`` (one frame) and the column names ``TARGET``, ``ID_COLUMN``, ``DATE_COLUMN``.
docs/simulator.md has the full description; this docstring is the summary.

The generative story
--------------------
Each row is one application. The applicant has an unobserved credit quality
``q ~ N(0, 1)`` that drives the bureau variables, so they are correlated as in real data.

* ``age`` (int, 18-85): ``floor(18 + Gamma(5.5, 4.4))``, median 40.
* ``state`` (category, 50 states + DC): Zipf-like weights ``1 / (rank + 2) ** 1.1`` by
  population rank (CA 12 %, WY 0.5 %); each state has a fixed logit offset (sd 0.24).
* ``employment_type`` (category): salaried / self_employed / contractor / unemployed /
  retired; unemployment likelier for low ``q``, retirement rising after 55.
* ``employment_length_years`` (float): ``min(Gamma(1.5, 4), age - 18)``; missing for the
  unemployed and retired and for another 3 % at random (about 9 % in all).
* ``annual_income`` (float): lognormal, log-mean concave in age and shifted by employment
  type, median about 64k; missing for 4 % at random plus 6 % of the self-employed (about
  5 % in all). A missing income is itself a risk signal.
* ``home_ownership`` (category): rent / mortgage / own / other, by age and income.
* ``customer_tenure_years`` (float): 0 for new customers (45 %), else ``Exp(mean 4)``.
* ``channel`` (category): online / branch / broker; the young apply online.
* ``loan_purpose`` (category): eleven purposes with their own median amount and risk.
* ``loan_amount`` (float): lognormal around the purpose median x ``sqrt(income / 60k)``,
  1,000-100,000, rounded to 100.
* ``loan_term_months`` (int): 36 or 60 (about 26 %), 60 likelier for large loans.
* ``credit_score`` (int, 300-850): ``692 + 62 q`` + age and income effects + ``N(0, 20)``.
* ``num_delinquencies_2y`` (int): zero-inflated, ``P(any) = sigmoid(-2 - q)`` (15 %),
  then ``1 + Poisson``.
* ``months_since_last_delinquency`` (float): the most recent delinquency in the 24-month
  window; missing exactly when there is none (informative missingness).
* ``credit_utilization`` (float, 0-1): beta with mean ``sigmoid(-0.85 - 0.55 q)``; 3 % missing.
* ``num_open_accounts``, ``num_inquiries_6m`` (int): Poisson.
* ``interest_rate`` (float, percent): ``5 + 28 ((850 - score) / 550) ** 1.3``, +1.5 for 60
  months, + ``N(0, 0.8)``.
* ``debt_to_income`` (float): existing debt payments / income, gamma-distributed, skewed.
* ``payment_to_income`` (float): annuity payment of this loan / monthly income (missing
  when the income is).
* ``has_cosigner`` (bool): about 5 %, likelier for low scores and applicants under 25.

``P(default) = sigmoid(b0 + f(x))``, with ``f`` (see ``_risk_score``) made of effects a
linear model cannot represent: a hinge in debt-to-income above 0.35, a credit-score slope
eight times steeper below 620, a U-shape in age, a U-shaped quadratic in utilization,
self-employed x low income, payment-to-income x 60-month term, delinquencies x
utilization, plus state, purpose, channel, employment and housing effects. ``b0`` is found
by bisection on a fixed 200,000-row drift-free pilot sample (cached per process), so the
default rate is ``default_rate`` whatever the caller's seed. The AUC of the true
probabilities is about 0.845; on 20,000 rows LightGBM beats a one-hot + standardised
logistic regression by about 0.035 AUC.

Drift scenarios (``DriftParams``; the change scales linearly with the magnitude ``m``;
below is ``m = 1``)
------------------------------------------------------------------------------------
* ``covariate_shift`` (``P(x)`` moves, ``P(y | x)`` does not): incomes x 0.75 (so
  debt-to-income / 0.75), credit scores -40 points, utilization ``u + 0.15 (1 - u)``,
  loan amounts x 1.2, the online channel's odds x 2. In general: incomes x ``(1 - 0.25 m)``,
  scores ``-40 m``, utilization ``u + 0.15 m (1 - u)``, amounts x ``(1 + 0.2 m)``, online
  odds x ``(1 + m)``. The default rate rises (0.14 -> about 0.23) because the applicants
  are riskier.
* ``new_category``: ``loan_purpose = "crypto_investment"`` in ``15 m`` % of rows and,
  independently, ``channel = "partner_api"`` in ``15 m`` % (both riskier than average).
  Both values join the category lists whenever ``new_category > 0``.
* ``concept_drift`` (``P(y | x)`` moves, ``P(x)`` does not): the debt-to-income terms x
  ``(1 + m)``, online channel ``+0.8 m`` on the logit, credit-score terms x
  ``max(0, 1 - 0.5 m)``, age curvature x ``max(-1, 1 - 2 m)`` (at 1.0 the middle-aged
  are the riskiest); ``b0`` is re-calibrated so the default rate stays at
  ``default_rate``. A LightGBM model trained before the drift loses about 5 AUC points.
* ``prior_shift``: ``b0 += m * delta``, ``delta`` being the intercept change that takes
  the rate from ``default_rate`` to ``min(2 default_rate, (1 + default_rate) / 2)``: the
  rate roughly doubles at 1.0 (0.14 -> 0.28); features unchanged.

Every random number is drawn in the same order, with scenario-free parameters, under
every scenario: the same seed gives the same applicants, and concept and prior drift
change nothing but ``default``.

Determinism, chunks and memory
------------------------------
Rows come from fixed internal blocks of ``_BLOCK_ROWS`` rows; block ``i`` uses the ``i``-th
child of ``numpy.random.SeedSequence(seed).spawn``. Chunks are cut from that stream, so the
data depend on ``(n_rows, seed, start_date, months, default_rate, drift, id_offset)`` and
never on ``chunk_rows``. ``application_id`` runs from ``id_offset`` upward;
``application_date`` (second resolution) increases with it, stratified uniformly over
``months`` months from ``start_date``. A row takes 150 bytes (10M rows: 1.5 GB, and
``simulate`` peaks at about that).
Nothing happens at import; the pilot sample is built on first use.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from driftloop.config import DriftParams

__all__ = [
    "CATEGORICAL_COLUMNS",
    "DATE_COLUMN",
    "FEATURE_COLUMNS",
    "ID_COLUMN",
    "NEW_CHANNEL",
    "NEW_LOAN_PURPOSE",
    "TARGET",
    "categories",
    "simulate",
    "simulate_chunks",
]

TARGET = "default"
ID_COLUMN = "application_id"
DATE_COLUMN = "application_date"

EMPLOYMENT_TYPES = ("salaried", "self_employed", "contractor", "unemployed", "retired")
HOME_OWNERSHIP = ("rent", "mortgage", "own", "other")
CHANNELS = ("online", "branch", "broker")
NEW_CHANNEL = "partner_api"
# (purpose, share, median amount, logit effect)
_PURPOSES = (
    ("debt_consolidation", 0.36, 15_000.0, 0.12),
    ("credit_card", 0.20, 10_000.0, 0.04),
    ("home_improvement", 0.10, 18_000.0, -0.20),
    ("car", 0.08, 20_000.0, -0.24),
    ("medical", 0.05, 6_000.0, 0.28),
    ("small_business", 0.04, 25_000.0, 0.48),
    ("education", 0.04, 12_000.0, 0.08),
    ("major_purchase", 0.05, 8_000.0, -0.04),
    ("vacation", 0.03, 4_000.0, 0.24),
    ("moving", 0.02, 5_000.0, 0.16),
    ("other", 0.03, 7_000.0, 0.12),
)
LOAN_PURPOSES = tuple(p[0] for p in _PURPOSES)
NEW_LOAN_PURPOSE = "crypto_investment"
_NEW_PURPOSE_AMOUNT, _NEW_PURPOSE_EFFECT = 12_000.0, 0.72
# 50 states + DC in (2020 census) population order; the sampling weights follow this rank.
_STATES_BY_POPULATION = (
    "CA", "TX", "FL", "NY", "PA", "IL", "OH", "GA", "NC", "MI", "NJ", "VA", "WA",
    "AZ", "MA", "TN", "IN", "MD", "MO", "WI", "CO", "MN", "SC", "AL", "LA", "KY",
    "OR", "OK", "CT", "UT", "IA", "NV", "AR", "MS", "KS", "NM", "NE", "ID", "WV",
    "HI", "NH", "ME", "RI", "MT", "DE", "SD", "ND", "AK", "DC", "VT", "WY",
)  # fmt: skip
STATES = tuple(sorted(_STATES_BY_POPULATION))

FEATURE_COLUMNS = (
    "age",
    "employment_type",
    "employment_length_years",
    "annual_income",
    "home_ownership",
    "state",
    "customer_tenure_years",
    "channel",
    "loan_purpose",
    "loan_amount",
    "loan_term_months",
    "interest_rate",
    "credit_score",
    "num_open_accounts",
    "num_delinquencies_2y",
    "months_since_last_delinquency",
    "credit_utilization",
    "num_inquiries_6m",
    "debt_to_income",
    "payment_to_income",
    "has_cosigner",
)
CATEGORICAL_COLUMNS = ("employment_type", "home_ownership", "state", "channel", "loan_purpose")

# Logit effects of the categorical columns (in category order).
_EMPLOYMENT_EFFECT = np.array([0.0, 0.12, 0.2, 0.64, -0.04])
_HOME_EFFECT = np.array([0.12, -0.04, -0.16, 0.16])
_CHANNEL_EFFECT = np.array([0.08, -0.12, 0.24, 0.48])  # online, branch, broker, partner_api
_PURPOSE_EFFECT = np.array([p[3] for p in _PURPOSES] + [_NEW_PURPOSE_EFFECT])
_PURPOSE_AMOUNT = np.array([p[2] for p in _PURPOSES] + [_NEW_PURPOSE_AMOUNT])

_BLOCK_ROWS = 100_000  # part of the determinism contract: changing it changes the data
_PILOT_SEED = 20_240_101
_PILOT_ROWS = 200_000
_STATE_OFFSET_SEED = 7_051


def categories(new_category: bool = False) -> dict[str, tuple[str, ...]]:
    """The fixed category list of every categorical column (with the drift values if asked)."""
    return {
        "employment_type": EMPLOYMENT_TYPES,
        "home_ownership": HOME_OWNERSHIP,
        "state": STATES,
        "channel": CHANNELS + ((NEW_CHANNEL,) if new_category else ()),
        "loan_purpose": LOAN_PURPOSES + ((NEW_LOAN_PURPOSE,) if new_category else ()),
    }


@functools.lru_cache(maxsize=1)
def _state_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cumulative weights by population rank, category code by rank, logit offset by code)."""
    rank = np.arange(1, len(_STATES_BY_POPULATION) + 1, dtype=np.float64)
    weights = 1.0 / (rank + 2.0) ** 1.1
    weights /= weights.sum()
    code_by_rank = np.array([STATES.index(s) for s in _STATES_BY_POPULATION], dtype=np.int8)
    offsets = np.random.default_rng(_STATE_OFFSET_SEED).normal(0.0, 0.24, len(STATES))
    offsets -= np.dot(weights, offsets[code_by_rank])  # population-weighted mean zero
    return np.cumsum(weights), code_by_rank, offsets


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _pick(logits: list[np.ndarray | float], u: np.ndarray) -> np.ndarray:
    """Row-wise categorical draw: ``logits`` holds one (bounded) logit per category, ``u`` uniforms."""
    weights = [np.exp(v) for v in logits]
    total = weights[0] + weights[1]
    for w in weights[2:]:
        total = total + w
    threshold = u * total
    cum = np.broadcast_to(weights[0], u.shape).copy()
    code = (threshold > cum).astype(np.int8)
    for w in weights[1:-1]:
        cum += w
        code += threshold > cum
    return code


def _draw_features(
    rng: np.random.Generator, n: int, cov: float, new: float
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Draw ``n`` applicants: (observed columns, true inputs of the risk function).

    Every draw below happens unconditionally and with scenario-free parameters, so the
    random stream is identical under every drift scenario; drift only transforms values.
    """
    cum_state, state_code_by_rank, _ = _state_tables()
    income_factor = max(1.0 - 0.25 * cov, 0.05)

    q = rng.standard_normal(n)  # latent credit quality
    age = np.minimum(np.floor(18.0 + rng.gamma(5.5, 4.4, n)), 85.0)
    rank = np.minimum(np.searchsorted(cum_state, rng.random(n) * cum_state[-1], side="right"), len(cum_state) - 1)
    state = state_code_by_rank[rank]

    emp_logits = [0.0, -1.6, -1.9, -2.8 - 0.5 * q, -5.0 + 0.3 * np.maximum(age - 55.0, 0.0)]
    emp = _pick(emp_logits, rng.random(n))
    self_emp = emp == 1
    not_working = emp >= 3

    emp_len = np.round(np.minimum(rng.gamma(1.5, 4.0, n), age - 18.0), 1)
    emp_len[not_working | (rng.random(n) < 0.03)] = np.nan

    emp_mu = np.array([0.0, 0.05, -0.05, -0.9, -0.35])
    emp_sigma = np.array([0.5, 0.75, 0.55, 0.5, 0.45])
    a18 = age - 18.0
    log_inc_pre = (
        10.72 + 0.03 * a18 - 0.0005 * a18**2 + emp_mu[emp] + 0.08 * q + emp_sigma[emp] * rng.standard_normal(n)
    )
    log_inc = log_inc_pre + math.log(income_factor)
    income_true = np.maximum(np.round(np.exp(log_inc), -2), 1_000.0)
    income_missing = rng.random(n) < 0.04 + 0.06 * self_emp
    income = np.where(income_missing, np.nan, income_true)

    home_logits = [
        0.0,
        -1.0 + 0.07 * (age - 30.0) + 0.8 * (log_inc_pre - 11.0),
        -2.8 + 0.08 * (age - 30.0),
        -3.2,
    ]
    home = _pick(home_logits, rng.random(n))

    existing = rng.random(n) < 0.55
    tenure = np.round(np.where(existing, np.minimum(rng.exponential(4.0, n), a18), 0.0), 1)

    channel_logits = [0.4 - 0.035 * (age - 40.0) + math.log1p(cov), 0.02 * (age - 40.0), -0.7]
    channel = _pick(channel_logits, rng.random(n))
    channel[rng.random(n) < 0.15 * new] = len(CHANNELS)

    cum_purpose = np.cumsum([p[1] for p in _PURPOSES])
    purpose = np.minimum(
        np.searchsorted(cum_purpose, rng.random(n) * cum_purpose[-1], side="right"), len(_PURPOSES) - 1
    ).astype(np.int8)
    purpose[rng.random(n) < 0.15 * new] = len(_PURPOSES)

    amount = _PURPOSE_AMOUNT[purpose] * np.exp(0.5 * (log_inc_pre - 11.0) + 0.45 * rng.standard_normal(n))
    amount = np.round(np.clip(amount * (1.0 + 0.2 * cov), 1_000.0, 100_000.0), -2)
    term60 = rng.random(n) < _sigmoid(-1.0 + 1.4 * (np.log(amount) - math.log(15_000.0)))
    term = np.where(term60, 60, 36).astype(np.int64)

    score = 692.0 + 62.0 * q + 0.9 * (np.minimum(age, 75.0) - 42.0) + 18.0 * (log_inc_pre - 11.0)
    score = score + 20.0 * rng.standard_normal(n) - 40.0 * cov
    score = np.round(np.clip(score, 300.0, 850.0))

    any_delinq = rng.random(n) < _sigmoid(-2.0 - q)
    delinq = np.zeros(n, dtype=np.int64)
    delinq[any_delinq] = 1 + rng.poisson(0.5 + 0.4 * np.maximum(-q[any_delinq], 0.0))
    # the most recent of k uniform months in the 24-month window: inverse CDF of a minimum
    months_since = np.full(n, np.nan)
    months_since[any_delinq] = np.floor(24.0 * (1.0 - rng.random(n)[any_delinq] ** (1.0 / delinq[any_delinq])))

    util_mean = _sigmoid(-0.85 - 0.55 * q)
    util_pre = rng.beta(util_mean * 4.5, (1.0 - util_mean) * 4.5)
    util_true = np.round(util_pre + 0.15 * cov * (1.0 - util_pre), 3)
    util = np.where(rng.random(n) < 0.03, np.nan, util_true)

    open_acc = rng.poisson(2.0 + 0.08 * np.minimum(a18, 40.0)).astype(np.int64)
    inquiries = rng.poisson(np.exp(-0.25 - 0.4 * q)).astype(np.int64)

    rate = 5.0 + 28.0 * ((850.0 - score) / 550.0) ** 1.3 + 1.5 * term60 + 0.8 * rng.standard_normal(n)
    rate = np.round(np.clip(rate, 3.5, 35.99), 2)

    debt = rng.gamma(2.0, 0.085, n) * np.exp(-0.3 * (log_inc_pre - 11.0)) + 0.04 * np.maximum(-q, 0.0)
    dti = np.round(np.minimum(debt / income_factor, 2.0), 4)

    cosigner = rng.random(n) < _sigmoid(-2.9 + 0.01 * (660.0 - score) + 0.9 * (age < 25.0))

    r = rate / 1200.0
    payment = amount * r / (1.0 - (1.0 + r) ** (-term))
    pti_true = np.round(payment / (income_true / 12.0), 4)
    pti = np.where(income_missing, np.nan, pti_true)

    cols = {
        "age": age.astype(np.int64),
        "employment_type": emp,
        "employment_length_years": emp_len,
        "annual_income": income,
        "home_ownership": home,
        "state": state,
        "customer_tenure_years": tenure,
        "channel": channel,
        "loan_purpose": purpose,
        "loan_amount": amount,
        "loan_term_months": term,
        "interest_rate": rate,
        "credit_score": score.astype(np.int64),
        "num_open_accounts": open_acc,
        "num_delinquencies_2y": delinq,
        "months_since_last_delinquency": months_since,
        "credit_utilization": util,
        "num_inquiries_6m": inquiries,
        "debt_to_income": dti,
        "payment_to_income": pti,
        "has_cosigner": cosigner,
    }
    risk = {
        "age": age,
        "score": score,
        "dti": dti,
        "util": util_true,
        "log_inc": log_inc,
        "income_missing": income_missing,
        "self_emp": self_emp,
        "emp": emp,
        "home": home,
        "state": state,
        "channel": channel,
        "purpose": purpose,
        "term60": term60,
        "pti": pti_true,
        "delinq": delinq,
        "inquiries": inquiries,
        "tenure": tenure,
        "cosigner": cosigner,
    }
    return cols, risk


def _risk_score(x: Mapping[str, np.ndarray], concept: float) -> np.ndarray:
    """The logit of default without the intercept."""
    _, _, state_offset = _state_tables()
    score, dti, util, age = x["score"], x["dti"], x["util"], x["age"]
    delinq = x["delinq"]
    score_weight = max(0.0, 1.0 - 0.5 * concept)
    dti_weight = 1.0 + concept
    age_weight = max(-1.0, 1.0 - 2.0 * concept)
    z = score_weight * (-0.002 * (score - 680.0) + 0.0144 * np.maximum(620.0 - score, 0.0))
    z += dti_weight * (0.4 * dti + 6.4 * np.maximum(dti - 0.35, 0.0))
    z += age_weight * 0.004 * np.minimum((age - 42.0) ** 2, 625.0)
    z += 8.0 * (util - 0.3) ** 2
    z += x["self_emp"] * 2.0 * np.maximum(10.9 - x["log_inc"], 0.0)
    z -= 0.12 * (x["log_inc"] - 11.0)
    z += 0.28 * x["income_missing"]
    z += x["term60"] * 11.2 * np.maximum(x["pti"] - 0.05, 0.0)
    z += 0.12 * np.minimum(delinq, 4) + 1.6 * np.minimum(delinq, 3) * util
    z += 0.08 * x["inquiries"]
    z -= 0.4 * x["cosigner"]
    z -= 0.04 * np.minimum(x["tenure"], 10.0)
    z += state_offset[x["state"]]
    z += _PURPOSE_EFFECT[x["purpose"]]
    z += _EMPLOYMENT_EFFECT[x["emp"]]
    z += _HOME_EFFECT[x["home"]]
    z += _CHANNEL_EFFECT[x["channel"]] + 0.8 * concept * (x["channel"] == 0)
    return z


@functools.lru_cache(maxsize=1)
def _pilot() -> dict[str, np.ndarray]:
    """Risk inputs of a fixed, drift-free pilot sample (independent of any caller's seed)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(_PILOT_SEED)))
    return _draw_features(rng, _PILOT_ROWS, 0.0, 0.0)[1]


@functools.lru_cache(maxsize=64)
def _calibrated_intercept(rate: float, concept: float) -> float:
    """The intercept that gives the pilot sample a mean default probability of ``rate``."""
    z = _risk_score(_pilot(), concept)
    lo, hi = -30.0, 30.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _sigmoid(mid + z).mean() < rate:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _intercept(default_rate: float, drift: DriftParams) -> float:
    b0 = _calibrated_intercept(default_rate, drift.concept_drift)
    if drift.prior_shift:
        doubled = min(2.0 * default_rate, (1.0 + default_rate) / 2.0)
        delta = _calibrated_intercept(doubled, 0.0) - _calibrated_intercept(default_rate, 0.0)
        b0 += drift.prior_shift * delta
    return b0


def _blocks(
    n_rows: int, seed: int, start_ns: int, span_s: int, default_rate: float, drift: DriftParams, id_offset: int
) -> Iterator[dict[str, np.ndarray]]:
    """Column arrays (categoricals as codes) of consecutive fixed-size blocks."""
    b0 = _intercept(default_rate, drift)
    n_blocks = -(-n_rows // _BLOCK_ROWS)
    children = np.random.SeedSequence(seed).spawn(n_blocks)
    for i, child in enumerate(children):
        first = i * _BLOCK_ROWS
        n = min(_BLOCK_ROWS, n_rows - first)
        rng = np.random.Generator(np.random.PCG64(child))
        cols, risk = _draw_features(rng, n, drift.covariate_shift, drift.new_category)
        p = _sigmoid(b0 + _risk_score(risk, drift.concept_drift))
        target = (rng.random(n) < p).astype(np.int64)
        index = np.arange(first, first + n, dtype=np.int64)
        seconds = np.floor((index + rng.random(n)) / n_rows * span_s).astype(np.int64)
        block = {
            ID_COLUMN: index + id_offset,
            DATE_COLUMN: (start_ns + seconds * 1_000_000_000).view("datetime64[ns]"),
        }
        block.update(cols)
        block[TARGET] = target
        yield block


def _array_chunks(
    n_rows: int, chunk_rows: int, blocks: Iterator[dict[str, np.ndarray]]
) -> Iterator[dict[str, np.ndarray]]:
    """Re-cut the block stream into chunks of ``chunk_rows`` rows (the last may be shorter)."""
    out: dict[str, np.ndarray] | None = None
    size = filled = emitted = 0
    for block in blocks:
        pos, m = 0, len(block[ID_COLUMN])
        while pos < m:
            if out is None:
                size, filled = min(chunk_rows, n_rows - emitted), 0
                if pos == 0 and m == size:  # the block is exactly one chunk: no copy
                    yield block
                    emitted += size
                    break
                out = {k: np.empty(size, dtype=v.dtype) for k, v in block.items()}
            take = min(size - filled, m - pos)
            for k, v in block.items():
                out[k][filled : filled + take] = v[pos : pos + take]
            filled += take
            pos += take
            if filled == size:
                yield out
                emitted += size
                out = None


def _frame(arrays: dict[str, np.ndarray], dtypes: dict[str, pd.CategoricalDtype]) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for name, values in arrays.items():
        if name in dtypes:
            data[name] = pd.Categorical.from_codes(values, dtype=dtypes[name])
        else:
            data[name] = values
    return pd.DataFrame(data, copy=False)


def _check(
    n_rows: int,
    seed: int,
    start_date: str,
    months: int,
    default_rate: float,
    drift: Any,
    chunk_rows: int,
    id_offset: int,
) -> tuple[DriftParams, int, int]:
    for name, value in (("n_rows", n_rows), ("seed", seed), ("months", months), ("chunk_rows", chunk_rows)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if isinstance(id_offset, bool) or not isinstance(id_offset, int | np.integer) or id_offset < 0:
        raise ValueError(f"id_offset must be a non-negative integer, got {id_offset!r}")
    if n_rows < 1:
        raise ValueError(f"n_rows must be at least 1, got {n_rows}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if months < 1:
        raise ValueError(f"months must be at least 1, got {months}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    if not 0.0 < float(default_rate) < 1.0:
        raise ValueError(f"default_rate must be strictly between 0 and 1, got {default_rate}")
    if drift is None:
        drift = DriftParams()
    elif isinstance(drift, Mapping):
        drift = DriftParams.model_validate(dict(drift))
    elif not isinstance(drift, DriftParams):
        raise ValueError(f"drift must be a DriftParams, a mapping or None, got {type(drift).__name__}")
    try:
        start = pd.Timestamp(start_date)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"start_date is not a date: {start_date!r}") from exc
    if start is pd.NaT or start.tz is not None:
        raise ValueError(f"start_date must be a timezone-naive date, got {start_date!r}")
    start = start.as_unit("ns")
    end = start + pd.DateOffset(months=months)
    span_s = int((end - start).total_seconds())
    return drift, int(start.value), span_s


def _generate(
    n_rows: int,
    seed: int,
    start_date: str,
    months: int,
    default_rate: float,
    drift: DriftParams | Mapping[str, float] | None,
    chunk_rows: int,
    id_offset: int,
    emit_rows: int,
) -> Iterator[pd.DataFrame]:
    """Validate eagerly, then return a lazy iterator of frames of at most ``emit_rows`` rows."""
    drift, start_ns, span_s = _check(n_rows, seed, start_date, months, default_rate, drift, chunk_rows, id_offset)
    dtypes = {name: pd.CategoricalDtype(list(cats)) for name, cats in categories(drift.new_category > 0).items()}
    blocks = _blocks(int(n_rows), int(seed), start_ns, span_s, float(default_rate), drift, int(id_offset))
    return (_frame(arrays, dtypes) for arrays in _array_chunks(int(n_rows), int(emit_rows), blocks))


def simulate_chunks(
    n_rows: int,
    seed: int,
    *,
    start_date: str = "2024-01-01",
    months: int = 12,
    default_rate: float = 0.14,
    drift: DriftParams | None = None,
    chunk_rows: int = 250_000,
    id_offset: int = 0,
) -> Iterator[pd.DataFrame]:
    """Yield ``n_rows`` simulated loan applications in frames of at most ``chunk_rows`` rows.

    Every chunk has the same columns, dtypes and category lists, and the concatenation does
    not depend on ``chunk_rows``. Invalid arguments raise ``ValueError`` at the call, before
    any chunk is produced.
    """
    return _generate(n_rows, seed, start_date, months, default_rate, drift, chunk_rows, id_offset, chunk_rows)


def simulate(
    n_rows: int,
    seed: int,
    *,
    start_date: str = "2024-01-01",
    months: int = 12,
    default_rate: float = 0.14,
    drift: DriftParams | None = None,
    chunk_rows: int = 250_000,
    id_offset: int = 0,
) -> pd.DataFrame:
    """All ``n_rows`` rows in one frame, equal to ``pd.concat(simulate_chunks(...), ignore_index=True)``.

    The frame is filled block by block without an intermediate concatenation, so the peak
    memory is about the size of the result (150 bytes a row).
    """
    frames = _generate(n_rows, seed, start_date, months, default_rate, drift, chunk_rows, id_offset, n_rows)
    return next(frames)
