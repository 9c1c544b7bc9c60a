"""Shared fields of the one-shot pruning configs (magnitude, obd, wanda, sparsegpt).

Not a config file itself: each method's file calls ``oneshot_config`` from its ``get_config``.
"""

import ml_collections

from configs.gradual import train_section
from configs.zeroshot import zeroshot_settings

# The comparison group of each method's unstructured setting in its paper: the whole tensor
# for magnitude, OBD and SparseGPT's ranking, each output unit for Wanda and RIA.
UNSTRUCTURED_GROUP = {"magnitude": "unstructured", "obd": "unstructured", "wanda": "per_output",
                      "sparsegpt": "unstructured", "ria": "per_output", "alps": "unstructured",
                      "wanda_pp": "per_output"}


def add_pruning_fields(config: ml_collections.ConfigDict, method: str, pattern: str) -> None:
    """The one-shot settings, flat in ``config``: exactly the fields that
    ``jaxprune.oneshot.settings_from_config`` reads (a test keeps the two sides equal)."""
    config.method = method  # a name of jaxprune.oneshot.registry.METHODS
    config.pattern = pattern
    # With an N:M pattern this must equal 1 - N/M (0.5 for 2:4 and 4:8; 0.75 for 1:4).
    config.sparsity = 0.5
    config.layers = ""  # a regex over the model's prunable kernels; empty: all of them
    config.order = "sequential"
    config.batch_size = 8
    config.blocksize = 128  # sparsegpt
    config.damp = 0.01  # sparsegpt
    config.ria_alpha = 0.5  # ria
    config.rgs_alpha = 100.0  # wanda_pp: weight of the regional gradient in the score
    config.alps_rho = 0.1  # alps: the initial ADMM penalty
    config.alps_iters = 300  # alps: the most ADMM iterations
    config.alps_cg_steps = 10  # alps: conjugate-gradient steps of the final refit
    config.alps_damp = 0.01  # alps: fraction of the mean Gram diagonal added to it
    # A refinement of the method's mask (jaxprune.oneshot.registry.REFINEMENTS): "none" or
    # "dsnot" (the DSnoT paper's settings below).
    config.refine = "none"
    # True prunes each kernel on RIA's channel permutation of its inputs (N:M patterns only),
    # folded back into the layer's own order.
    config.permute = False
    config.dsnot_cycles = 50
    config.dsnot_threshold = 0.1
    config.dsnot_var_power = 1.0
    # "adam" refits each pruned block's kept weights to the dense block's output
    # (jaxprune.oneshot.reconstruct; Wanda++'s regional optimisation).
    config.reconstruction = "none"
    config.recon_steps = 32
    config.recon_lr = 1e-3  # Adam's rate (jaxprune.oneshot.BlockReconstruction says why)
    # "maskllm" learns N:M masks end to end from the method's as a prior (MaskLLM; N:M only).
    config.learn_masks = "none"
    config.maskllm_steps = 100
    config.maskllm_lr = 5e-4
    config.maskllm_batch_size = 4
    config.maskllm_prior_strength = 3.0
    config.maskllm_weight_reg = 1e-5
    config.maskllm_seed = 0
    # Weight quantization after each block is pruned (jaxprune.quant): "rtn" (round to
    # nearest), "gptq" (keeps each kernel's mask; blocksize and damp as SparseGPT's), or
    # "joint" (method sparsegpt only: prune and quantize in one column sweep). Method "dense"
    # with a quantizer quantizes the model as it is.
    config.quantize = "none"
    config.quant_bits = 4
    # Inputs per scale (0: one scale per output unit). 64, not the usual 128: SmolLM2's hidden
    # size, 576, is 4.5 groups of 128, and a group must divide every quantized kernel's inputs.
    config.quant_group_size = 64
    config.quant_symmetric = True
    # The token embedding table (and so a tied head) by round-to-nearest, one symmetric scale
    # per token: 0 keeps it in float; 8 or 4 bits. Any one-shot run but a streamed one.
    config.quant_embedding_bits = 0
    config.allocation = "uniform"  # or "owl"
    config.owl_lambda = 0.08
    config.owl_m = 5.0
    # Device mesh (docs/scaling.md): batches split over mesh_data devices, pruned kernels split
    # by output units over mesh_model devices.
    config.mesh_data = 1
    config.mesh_model = 1


def oneshot_config(method: str, pattern: str, arg=None) -> ml_collections.ConfigDict:
    """The protocol of the issues: 64 x 512 contiguous calibration tokens from the Wikipedia
    text, WikiText-2 raw test with 128 windows of 512; ``arg="runlocal"`` shrinks everything."""
    config = ml_collections.ConfigDict()
    config.model = "smollm2-135m"
    config.param_dtype = "float32"
    add_data_sections(config)
    add_pruning_fields(config, method, pattern)
    # num_cpu_devices > 0 fakes that many CPU devices (for trying a mesh on one machine);
    # distributed=True joins processes with jax.distributed.initialize() (cluster settings
    # detected, or the binary's --coordinator_address, --num_processes and --process_id flags;
    # docs/scaling.md).
    config.num_cpu_devices = 0
    config.distributed = False
    # stream=True prunes and evaluates one block at a time from disk, for models larger than
    # memory: config.model must be a Hugging Face directory, and the pruned model is written to
    # WORKDIR/hf as it goes (resumable; docs/scaling.md).
    config.stream = False
    add_recovery_fields(config)
    add_output_fields(config)
    # --config.runlocal=True (or arg "runlocal") shrinks the job to a smoke run: the binaries
    # apply these (field, value) pairs after the command line.
    config.runlocal = arg == "runlocal"
    config.runlocal_overrides = (
        ("calibration.source", "pydoc"), ("calibration.num_segments", 4),
        ("calibration.length", 64), ("eval.source", "pydoc"), ("eval.window", 128),
        ("eval.max_windows", 2), ("eval.batch_size", 2), ("batch_size", 2),
        ("train.source", "pydoc"), ("train.steps", 4), ("train.warmup_steps", 1),
        ("train.seq_len", 32),
        ("train.log_every", 2), ("train.checkpoint_every", 2),
    )
    return config


def add_data_sections(config: ml_collections.ConfigDict) -> None:
    """The calibration text and the evaluation (WikiText-2 perplexity, zero-shot tasks)."""
    config.calibration = ml_collections.ConfigDict()
    config.calibration.source = "file"
    config.calibration.path = ""  # e.g. ../shared/data/calibration/enwiki-excerpt.txt
    config.calibration.split = "train"
    config.calibration.num_segments = 64
    config.calibration.length = 512
    config.calibration.seed = 0
    config.calibration.contiguous = True

    config.eval = ml_collections.ConfigDict()
    config.eval.source = "wikitext2"
    config.eval.path = ""  # e.g. ../shared/data/wikitext-2-raw
    config.eval.split = "test"
    config.eval.window = 512
    config.eval.max_windows = ml_collections.FieldReference(128, field_type=int)
    config.eval.batch_size = 8
    # Zero-shot accuracy after perplexity, e.g. --config.eval.zeroshot.tasks=boolq,rte (empty:
    # none; configs/zeroshot.py has the fields).
    config.eval.zeroshot = zeroshot_settings()


def add_recovery_fields(config: ml_collections.ConfigDict) -> None:
    """Recovery between pruning and quantization: "lora" distils the pruned model from the
    dense one through masked LoRA updates (jaxprune.training.lora_recover; zeros and 2:4 kept),
    on config.train's text; config.quantize then quantizes the recovered model ("joint"
    cannot)."""
    config.recover = "none"
    config.lora_rank = 8
    config.lora_alpha = 16.0
    config.lora_layers = ""  # a regex over kernel paths; empty: every linear layer
    config.lora_seed = 0  # draws the A factors and the batches
    # A CPU-sized budget (as the structured tables' distillation): 64 steps of 4 x 256 tokens.
    config.train = train_section(steps=64, batch_size=4, seq_len=256, learning_rate=5e-4,
                                 warmup_steps=4, checkpoint_every=32, log_every=8)


def add_output_fields(config: ml_collections.ConfigDict) -> None:
    """The work directory and what the job saves there."""
    config.evaluate_dense = False
    config.workdir = ""  # results.json, results.md and saved models go here
    # A workdir holding another config's run is refused; True moves that run aside first.
    config.overwrite = False
    config.save_checkpoint = False  # orbax checkpoint of the pruned parameters and masks
    config.save_hf = False  # Hugging Face directory of the pruned model
    # GGUF file of the pruned model for llama.cpp (WORKDIR/model.gguf): "" (none), "F32",
    # "F16", "Q8_0" or "Q4_0" (jaxprune.models.gguf_export).
    config.save_gguf = ""
    # compressed-tensors checkpoint for vLLM (WORKDIR/compressed; needs config.quantize): the
    # quantized codes and scales as they are, the 2:4 structure stated.
    config.save_compressed = False
