"""rl-zoo style hyperparameter files: ``dqn.yml``, the one source of the recipes' hyperparameters.

Shipped as package data, so that :func:`spiking_dqn.recipes.hyperparams.load_hyperparams`
finds it in an installed wheel as well as in a clone.
"""
