"""Ready model.learn() recipes and the trained agents shipped with spiking-dqn."""
