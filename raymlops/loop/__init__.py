"""The closed loop: triggers decide, :mod:`raymlops.loop.retrain` retrains and rolls out, and the
``flights_loop`` demo (:mod:`raymlops.loop.stages`) replays later months as live traffic to show it."""
