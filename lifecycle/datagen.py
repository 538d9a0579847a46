"""Generate the demo's realistic tabular data with numpy: card transactions and subscription customers."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

FRAUD_REGIONS = (["NA", "EU", "APAC", "LATAM"], [0.42, 0.30, 0.19, 0.09])
FRAUD_CHANNELS = (["web", "mobile", "pos"], [0.48, 0.37, 0.15])
MERCHANTS = (["grocery", "electronics", "travel", "fashion", "gaming", "fuel", "restaurants", "digital_goods"],
             [0.22, 0.12, 0.08, 0.14, 0.07, 0.12, 0.15, 0.10])


def _times(rng: np.random.Generator, start: datetime, days: int, n: int) -> pd.Series:
    # Daily seasonality: fewer events at night, so the "night" signal is rare but present.
    day = rng.integers(0, days, n)
    hour = rng.choice(24, n, p=_hour_weights())
    seconds = day * 86400 + hour * 3600 + rng.integers(0, 3600, n)
    stamps = pd.Timestamp(start) + pd.to_timedelta(np.sort(seconds), unit="s")
    return pd.Series(stamps, name="event_time")


def _hour_weights() -> np.ndarray:
    w = np.array([1, 0.7, 0.5, 0.4, 0.4, 0.6, 1.2, 2, 3, 3.5, 3.8, 4, 4.2, 4, 3.8, 3.6, 3.6, 3.8, 4, 4, 3.5, 3, 2.2,
                  1.5])
    return w / w.sum()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def fraud_events(rng: np.random.Generator, start: datetime, days: int, per_day: int) -> pd.DataFrame:
    """Return card transactions with a fraud label drawn from a non-linear ground truth."""
    n = days * per_day
    t = _times(rng, start, days, n)
    region = rng.choice(FRAUD_REGIONS[0], n, p=FRAUD_REGIONS[1])
    channel = rng.choice(FRAUD_CHANNELS[0], n, p=FRAUD_CHANNELS[1])
    merchant = rng.choice(MERCHANTS[0], n, p=MERCHANTS[1])
    amount = np.round(rng.lognormal(3.6, 1.05, n), 2)
    avg_30d = np.round(np.maximum(1.0, amount * rng.lognormal(0.0, 0.55, n)), 2)
    account_age = rng.gamma(1.6, 420.0, n).astype(int)
    txn_24h = rng.poisson(2.2, n) + (rng.random(n) < 0.05) * rng.poisson(8, n)
    distance = np.round(rng.exponential(35.0, n), 1)
    device_risk = np.round(rng.beta(2.0, 5.0, n), 4)
    international = rng.random(n) < np.where(region == "EU", 0.14, 0.07)
    chargebacks = rng.poisson(0.12, n)
    hour = t.dt.hour.to_numpy()
    velocity = amount / avg_30d
    logit = (-6.4 + 5.0 * device_risk + 1.9 * (hour < 5) + 2.6 * (velocity > 3.0) + 1.4 * (account_age < 45)
             + 2.3 * ((amount > 250) & (channel == "web")) + 2.2 * (international & (distance > 300))
             + 0.8 * chargebacks + 0.6 * np.isin(merchant, ["electronics", "gaming", "digital_goods"])
             + 0.7 * (txn_24h > 6) - 1.0 * (channel == "pos"))
    label = (rng.random(n) < _sigmoid(logit)).astype(np.int8)
    feature_time = t - pd.to_timedelta(rng.integers(5, 900, n), unit="s")
    return pd.DataFrame({
        "txn_id": pd.Series(np.arange(n)).map("{:08d}".format).astype(str), "event_time": t,
        "feature_time": feature_time, "region": region, "channel": channel, "merchant_category": merchant,
        "amount": amount, "avg_amount_30d": avg_30d, "account_age_days": account_age,
        "txn_count_24h": txn_24h.astype(np.int64), "distance_from_home_km": distance, "device_risk": device_risk,
        "is_international": international, "chargebacks_90d": chargebacks.astype(np.int64),
        "hour_of_day": hour.astype(np.int64), "is_fraud": label,
    })


CHURN_REGIONS = (["NA", "EU", "APAC"], [0.5, 0.35, 0.15])
CHURN_CHANNELS = (["web", "store", "partner"], [0.55, 0.3, 0.15])
PLANS = (["basic", "standard", "premium", "family"], [0.35, 0.35, 0.18, 0.12])


def churn_events(rng: np.random.Generator, start: datetime, days: int, per_day: int) -> pd.DataFrame:
    """Return monthly customer scorings with a churn-within-60-days label."""
    n = days * per_day
    t = _times(rng, start, days, n)
    region = rng.choice(CHURN_REGIONS[0], n, p=CHURN_REGIONS[1])
    channel = rng.choice(CHURN_CHANNELS[0], n, p=CHURN_CHANNELS[1])
    plan = rng.choice(PLANS[0], n, p=PLANS[1])
    contract = np.where(rng.random(n) < 0.38, "annual", "monthly")
    tenure = rng.gamma(1.4, 14.0, n).astype(int) + 1
    spend = np.round(np.select([plan == "basic", plan == "standard", plan == "premium"], [9.0, 15.0, 25.0], 30.0)
                     * rng.lognormal(0, 0.15, n), 2)
    tickets = rng.poisson(0.8, n)
    last_login = rng.exponential(6.0, n).astype(int)
    failures = rng.poisson(0.15, n)
    discount = np.round(np.where(rng.random(n) < 0.2, rng.uniform(5, 40, n), 0.0), 1)
    nps = np.clip(np.round(rng.normal(7.2, 2.0, n)), 0, 10).astype(np.int64)
    usage_trend = np.round(rng.normal(0.0, 0.25, n), 3)
    # Churn spikes early in tenure and at the annual renewal; disengagement matters past a threshold.
    logit = (-2.9 + 0.7 * (contract == "monthly") + 1.5 * (tenure <= 3) + 1.6 * ((tenure % 12 == 0) & (contract == "annual"))
             + 1.4 * (last_login > 14) + 1.2 * ((tickets >= 2) & (nps < 6)) + 0.9 * failures - 0.12 * (nps - 7)
             - 2.0 * usage_trend + 1.0 * ((discount > 0) & (tenure < 6)) + 0.6 * (plan == "premium") * (spend > 28))
    label = (rng.random(n) < _sigmoid(logit)).astype(np.int8)
    feature_time = t - pd.to_timedelta(rng.integers(60, 7200, n), unit="s")
    return pd.DataFrame({
        "customer_id": pd.Series(np.arange(n)).map("C{:07d}".format).astype(str), "event_time": t,
        "feature_time": feature_time, "region": region, "channel": channel, "plan": plan, "contract": contract,
        "tenure_months": tenure.astype(np.int64), "monthly_spend": spend, "support_tickets_90d": tickets,
        "last_login_days": last_login.astype(np.int64), "payment_failures_90d": failures,
        "discount_pct": discount, "nps": nps, "usage_trend": usage_trend, "churned_60d": label,
    })


def window(frame: pd.DataFrame, start: datetime, end: datetime, as_of: datetime, label: str,
           delay_days: int) -> pd.DataFrame:
    """Cut [start, end) and hide labels not yet mature at as_of, as an extraction at as_of would."""
    cut = frame[(frame["event_time"] >= pd.Timestamp(start)) & (frame["event_time"] < pd.Timestamp(end))].copy()
    # Event times are stored as naive UTC; compare with as_of in the same terms.
    as_of_utc = pd.Timestamp(as_of).tz_convert("UTC").tz_localize(None) if as_of.tzinfo else pd.Timestamp(as_of)
    mature = cut["event_time"] + timedelta(days=delay_days) <= as_of_utc
    cut[label] = cut[label].astype("Int8").where(mature)
    return cut.reset_index(drop=True)
