"""Real texts vLLM 0.32 (CPU build) printed for rejected configurations, captured on the development machine.

MESSAGES: str(exc) of the pydantic ValidationError that `EngineArgs(model=<pocket model>, enforce_eager=True,
**args).create_engine_config()` raised; `folder_without_config` had an empty folder as model, and
`two_fields` is `SchedulerConfig(max_num_batched_tokens=-5, max_num_seqs=0, max_model_len=100,
is_encoder_decoder=False)`. SERVER_LOG: the API server's output for `--dtype float32 --quantization
int8_per_channel_weight_only` on the pocket model (exit code 1), the traceback's middle frames cut.
"""

MESSAGES = {
    # quantization='int8_per_channel_weight_only', dtype='float32'
    'int8_on_float32': (
        '1 validation error for VllmConfig\n'
        "  Value error, torch.float32 is not supported for quantization method int8_per_channel_weight_only. Supported dtypes: [torch.bfloat16, torch.float16] [type=value_error, input_value=ArgsKwargs((), {'model_co... 'shutdown_timeout': 0}), input_type=ArgsKwargs]\n"
        '    For further information visit https://errors.pydantic.dev/2.14/v/value_error'
    ),
    # quantization='bogus'
    'unknown_quantization': (
        '1 validation error for ModelConfig\n'
        "  Value error, Unknown quantization method: bogus. Must be one of ['awq', 'auto_awq', 'fp8', 'fbgemm_fp8', 'fp_quant', 'modelopt', 'modelopt_fp4', 'modelopt_mxfp8', 'modelopt_mixed', 'auto_gptq', 'gptq', 'gptq_marlin', 'awq_marlin', 'humming', 'compressed-tensors', 'experts_int8', 'quark', 'moe_wna16', 'torchao', 'inc', 'mxfp4', 'gpt_oss_mxfp4', 'deepseek_v4_fp8', 'online', 'fp8_per_tensor', 'fp8_per_block', 'fp8_per_channel', 'int8_per_channel_weight_only', 'nvfp4_per_token', 'mxfp8']. [type=value_error, input_value=ArgsKwargs((), {'model': ...nderer_num_workers': 1}), input_type=ArgsKwargs]\n"
        '    For further information visit https://errors.pydantic.dev/2.14/v/value_error'
    ),
    # kv_cache_dtype='bogus'
    'kv_dtype': (
        '1 validation error for CacheConfig\n'
        'cache_dtype\n'
        "  Input should be 'auto', 'float16', 'bfloat16', 'fp8', 'fp8_e4m3', 'fp8_e5m2', 'fp8_inc', 'fp8_ds_mla', 'nvfp4_ds_mla', 'turboquant_k8v4', 'turboquant_4bit_nc', 'turboquant_k3v4_nc', 'turboquant_3bit_nc', 'ultraquant_4bit', 'int4_per_token_head', 'int8_per_token_head', 'fp8_per_token_head', 'nvfp4' or 'nvfp4_4over6' [type=literal_error, input_value='bogus', input_type=str]\n"
        '    For further information visit https://errors.pydantic.dev/2.14/v/literal_error'
    ),
    # dtype='bogus'
    'dtype_two_branches': (
        '2 validation errors for ModelConfig\n'
        "dtype.literal['auto','half','float16','bfloat16','float','float32']\n"
        "  Input should be 'auto', 'half', 'float16', 'bfloat16', 'float' or 'float32' [type=literal_error, input_value='bogus', input_type=str]\n"
        '    For further information visit https://errors.pydantic.dev/2.14/v/literal_error\n'
        'dtype.is-instance[dtype]\n'
        "  Input should be an instance of dtype [type=is_instance_of, input_value='bogus', input_type=str]\n"
        '    For further information visit https://errors.pydantic.dev/2.14/v/is_instance_of'
    ),
    # model=<an empty folder>
    'folder_without_config': (
        '1 validation error for ModelConfig\n'
        "  Value error, Invalid repository ID or local directory specified: '/tmp/emptymodel'.\n"
        'Please verify the following requirements:\n'
        '1. Provide a valid Hugging Face repository ID.\n'
        '2. Specify a local directory that contains a recognized configuration file.\n'
        "   - For Hugging Face models: ensure the presence of a 'config.json'.\n"
        "   - For Mistral models: ensure the presence of a 'params.json'.\n"
        " [type=value_error, input_value=ArgsKwargs((), {'model': ...nderer_num_workers': 1}), input_type=ArgsKwargs]\n"
        '    For further information visit https://errors.pydantic.dev/2.14/v/value_error'
    ),
    # SchedulerConfig(max_num_batched_tokens=-5, max_num_seqs=0, ...)
    'two_fields': (
        '2 validation errors for SchedulerConfig\n'
        'max_num_batched_tokens\n'
        '  Input should be greater than or equal to 1 [type=greater_than_equal, input_value=-5, input_type=int]\n'
        '    For further information visit https://errors.pydantic.dev/2.14/v/greater_than_equal\n'
        'max_num_seqs\n'
        '  Input should be greater than or equal to 1 [type=greater_than_equal, input_value=0, input_type=int]\n'
        '    For further information visit https://errors.pydantic.dev/2.14/v/greater_than_equal'
    ),
    # quantization='awq' on a model without AWQ weights
    'awq_without_checkpoint': (
        '1 validation error for VllmConfig\n'
        "  Value error, Cannot find the config file for awq [type=value_error, input_value=ArgsKwargs((), {'model_co... 'shutdown_timeout': 0}), input_type=ArgsKwargs]\n"
        '    For further information visit https://errors.pydantic.dev/2.14/v/value_error'
    ),
}

SERVER_LOG = (
    "(APIServer pid=7989) INFO 12-03 15:50:47 [api_utils.py:286] non-default args: {'host': '127.0.0.1', 'port': 18931, 'model': '/work/wt-errors/pytest_rllm/pocket/model', 'dtype': 'float32', 'quantization': 'int8_per_channel_weight_only', 'enforce_eager': True}\n"
    '(APIServer pid=7989) WARNING 12-03 15:50:47 [system_utils.py:255] Found ulimit of 20000 and failed to automatically increase with error current limit exceeds maximum limit. This can cause fd limit errors like `OSError: [Errno 24] Too many open files`. Consider increasing with ulimit -n\n'
    'W1203 15:51:06.326000 7989 torch/_library/triton.py:53] Triton not available, find_triton_kernels = []\n'
    '(APIServer pid=7989) INFO 12-03 15:51:06 [model.py:733] Resolved architecture: LlamaForCausalLM\n'
    '(APIServer pid=7989) INFO 12-03 15:51:06 [model.py:2492] Upcasting torch.bfloat16 to torch.float32.\n'
    '(APIServer pid=7989) INFO 12-03 15:51:06 [model.py:2152] Using max model len 8192\n'
    'Traceback (most recent call last):\n'
    '  File "<frozen runpy>", line 198, in _run_module_as_main\n'
    '  File "<frozen runpy>", line 88, in _run_code\n'
    '  ...  (frames between cut)\n'
    '                  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n'
    '  File "/work/main/.venv/lib/python3.11/site-packages/vllm/engine/arg_utils.py", line 2838, in create_engine_config\n'
    '    config = VllmConfig(\n'
    '             ^^^^^^^^^^^\n'
    '  File "/work/main/.venv/lib/python3.11/site-packages/pydantic/_internal/_dataclasses.py", line 121, in __init__\n'
    '    s.__pydantic_validator__.validate_python(ArgsKwargs(args, kwargs), self_instance=s)\n'
    'pydantic_core._pydantic_core.ValidationError: 1 validation error for VllmConfig\n'
    "  Value error, torch.float32 is not supported for quantization method int8_per_channel_weight_only. Supported dtypes: [torch.bfloat16, torch.float16] [type=value_error, input_value=ArgsKwargs((), {'model_co... 'shutdown_timeout': 0}), input_type=ArgsKwargs]\n"
    '    For further information visit https://errors.pydantic.dev/2.14/v/value_error\n'
    ''
)
