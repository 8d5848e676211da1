"""tests/nnx: skipped as a whole without jax, flax, torch."""

from ropelab_testing import skip_folder_without

collect_ignore_glob = skip_folder_without("nnx", 'jax', 'flax', 'torch')
