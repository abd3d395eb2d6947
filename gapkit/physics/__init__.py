"""Physics beyond a local GP: Delta-learning baselines (:mod:`gapkit.physics.baselines`)
and active learning (:mod:`gapkit.physics.active`, with its walkers in
:mod:`gapkit.physics.sampling`, oracle labelling in :mod:`gapkit.physics.labelling` and
restart files in :mod:`gapkit.physics.active_state`)."""
