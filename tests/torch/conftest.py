"""tests/torch: skipped as a whole without torch."""

from ropelab_testing import skip_folder_without

collect_ignore_glob = skip_folder_without("torch", 'torch')
