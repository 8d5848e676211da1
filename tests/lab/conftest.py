"""tests/lab: skipped as a whole without torch, safetensors."""

from ropelab_testing import skip_folder_without

collect_ignore_glob = skip_folder_without("lab", 'torch', 'safetensors')
