"""The recipe layer: how an agent is trained, with which hyperparameters, and its model card.

* :mod:`~spiking_dqn.recipes.recipe`: the one ``model.learn()`` loop the recipes share
  (learn with SB3's ``EvalCallback``, fit to the chip with QAT, evaluate), its options
  (:class:`~spiking_dqn.recipes.recipe.TrainOptions`) and its seeds;
* :mod:`~spiking_dqn.recipes.hyperparams`: the hyperparameters of ``zoo_configs/dqn.yml``;
* :mod:`~spiking_dqn.recipes.card`: the model card and learning curve of a trained agent.

``spiking-dqn train`` and ``demo`` (:mod:`spiking_dqn.cli`) parse their options and call
it; so do the recipes of ``agents/`` and the benchmarks.
"""
