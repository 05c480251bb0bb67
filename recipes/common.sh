# Shared by the recipes in this folder (sourced, not run). Environment:
#   SRT=1 (default)  python -m openrlhf_srt.cli.train_ppo_ray with the --srt.* flags below
#   SRT=0            the baseline twin: python -m openrlhf.cli.train_ppo_ray, same OpenRLHF flags,
#                    OpenRLHF's own engines with vLLM's defaults: on CUDA async scheduling and,
#                    where vLLM picks it, Model Runner V2. The SRT engine gives both up (vLLM
#                    turns async scheduling off and falls back to the V1 model runner for any
#                    custom_class drafter), so a speedup against this twin is the honest one.
#   DRY_RUN=1        print the command (NUL-separated argv) instead of running it
#   MODEL, PROMPT_DATA, INPUT_KEY, LABEL_KEY, CKPT_DIR, GPUS (per node), NODES, PYTHON,
#   WANDB_API_KEY (W&B logging when set), SRT_EXTRA (more --srt.* flags, space-separated),
#   SRT_CACHE_BYTES (--srt.cache_bytes per engine; default sized from the node, below)
# Run names are <recipe>_srt / <recipe>_baseline in one W&B group, so the twins compare.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRT=${SRT:-1}
MODEL=${MODEL:-Qwen/Qwen2.5-1.5B}
GPUS=${GPUS:-8}
NODES=${NODES:-1}
PYTHON=${PYTHON:-python3}
# Absolute: the path is handed to other processes (Ray actors) with other working folders.
CKPT_DIR=$(realpath -m "${CKPT_DIR:-./ckpt}")

# Each engine's tree cache lives in host RAM, in the engine's process. Default: a quarter of
# this node's RAM shared by its GPUS engines, at most 8 GiB and at least 256 MiB each, e.g.
# 2 TiB or 256 GiB / 8 engines -> 8 GiB each (64 GiB of the node), 128 GiB / 8 -> 4 GiB.
# Snapshots (--srt.snapshot, with every checkpoint) keep the newest set only: at most
# engines x cache_bytes on disk (64 GiB for 8 engines at 8 GiB), whatever --ckpt.max_num.
srt_cache_bytes() {
  local mem_kib per cap=$((8 << 30)) floor=$((256 << 20))
  mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
  per=$(( mem_kib * 1024 / 4 / GPUS ))
  (( per > cap )) && per=$cap
  (( per < floor )) && per=$floor
  echo "$per"
}
SRT_CACHE_BYTES=${SRT_CACHE_BYTES:-$(srt_cache_bytes)}

# One node of GPUS GPUs, everything colocated: GPUS vLLM engines (TP 1) that sleep while
# DeepSpeed trains. The --srt.* defaults are documented in docs/openrlhf.md.
common_args() {
  local name=$1
  printf '%s\0' \
    --actor.model_name_or_path "$MODEL" \
    --actor.num_nodes "$NODES" --actor.num_gpus_per_node "$GPUS" \
    --ref.num_nodes "$NODES" --ref.num_gpus_per_node "$GPUS" \
    --critic.num_nodes "$NODES" --critic.num_gpus_per_node "$GPUS" \
    --vllm.num_engines "$((NODES * GPUS))" --vllm.tensor_parallel_size 1 \
    --vllm.gpu_memory_utilization 0.6 --vllm.enable_sleep --ds.enable_sleep \
    --train.colocate_all \
    --ds.zero_stage 2 --ds.param_dtype bf16 --ds.packing_samples \
    --actor.gradient_checkpointing_enable \
    --actor.lr_warmup_ratio 0.0 --critic.lr_warmup_ratio 0.0 \
    --rollout.temperature 1.0 \
    --data.prompt_dataset "$PROMPT_DATA" --data.input_key "$INPUT_KEY" \
    --data.label_key "$LABEL_KEY" --data.apply_chat_template \
    --ckpt.path "$CKPT_DIR/$name/checkpoints" --ckpt.output_dir "$CKPT_DIR/$name" \
    --ckpt.save_steps 20 --ckpt.load_enable \
    --logger.tensorboard_dir "$CKPT_DIR/$name/tensorboard" \
    --logger.wandb.project openrlhf-srt --logger.wandb.group "$name"
  if [ -n "${WANDB_API_KEY:-}" ]; then printf '%s\0' --logger.wandb.key "$WANDB_API_KEY"; fi
}

# run_recipe NAME [OpenRLHF flags...]: the SRT run or its baseline twin.
run_recipe() {
  local name=$1; shift
  local -a cmd
  mapfile -d '' -t common < <(common_args "$name")
  if [ "$SRT" = 1 ]; then
    # shellcheck disable=SC2206 # SRT_EXTRA is split on spaces on purpose
    local -a extra=(${SRT_EXTRA:-})
    cmd=("$PYTHON" -m openrlhf_srt.cli.train_ppo_ray "${common[@]}" "$@"
         --logger.wandb.run_name "${name}_srt"
         --srt.max_draft_tokens 8 --srt.budget goodput --srt.cache_bytes "$SRT_CACHE_BYTES"
         --srt.runahead 1 "${extra[@]}")
  else
    cmd=("$PYTHON" -m openrlhf.cli.train_ppo_ray "${common[@]}" "$@"
         --logger.wandb.run_name "${name}_baseline")
  fi
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%s\0' "${cmd[@]}"
    return 0
  fi
  exec "${cmd[@]}"
}
