"""tests/hf: skipped as a whole without torch, transformers."""

from ropelab_testing import skip_folder_without

collect_ignore_glob = skip_folder_without("hf", 'torch', 'transformers')
