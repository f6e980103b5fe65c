# Sourced by every launcher in scripts/ (after `cd` to the repository root): one convention for all of them.
# Interpreter: $PYTHON, else .venv/bin/python (or $VENV/bin/python) when present, else python3.
# Data in ./data, the fitted Gaussians in ./data/centers, runs in ./experiment/<recipe> (flags given last override).

find_python() {
  if [ -n "${PYTHON:-}" ]; then
    printf '%s\n' "$PYTHON"
  elif [ -x "${VENV:-.venv}/bin/python" ]; then
    printf '%s\n' "${VENV:-.venv}/bin/python"
  else
    printf '%s\n' python3
  fi
}
PY=$(find_python)
DATA_ROOT=./data
CENTER_DIR=./data/centers

# flag_value FLAG DEFAULT ARGS...: the value the last FLAG in ARGS gives (argparse's rule), else DEFAULT
flag_value() {
  local flag=$1 value=$2
  shift 2
  while [ $# -gt 0 ]; do
    case $1 in
      "$flag") [ $# -ge 2 ] && value=$2 ;;
      "$flag"=*) value=${1#*=} ;;
    esac
    shift
  done
  printf '%s\n' "$value"
}

# wants_help ARGS...: whether -h or --help is among ARGS
wants_help() {
  local a
  for a in "$@"; do
    case $a in -h|--help) return 0 ;; esac
  done
  return 1
}

# fit_centers_if_missing ARGS...: the chains of a Gaussian start (--init gm or gm_class) need one_center.py's
# files; fit them first when they are missing, printing the command
fit_centers_if_missing() {
  local dataset init centers root tag per_class=()
  dataset=$(flag_value --dataset fashionmnist "$@")
  init=$(flag_value --init gm "$@")
  centers=$(flag_value --center_dir . "$@")
  root=$(flag_value --data_root ./data "$@")
  case $init in
    gm) tag=one ;;
    gm_class) tag=class; per_class=(--per_class) ;;
    *) return 0 ;;
  esac
  [ -f "$centers/${dataset}_mean_${tag}.pt" ] && [ -f "$centers/${dataset}_cov_${tag}.pt" ] && return 0
  echo "the chains start from the Gaussian of $dataset, not yet fitted in $centers; fitting it first:"
  echo "  $PY one_center.py --dataset $dataset --data_root $root --save_dir $centers ${per_class[*]}"
  "$PY" one_center.py --dataset "$dataset" --data_root "$root" --save_dir "$centers" ${per_class[@]+"${per_class[@]}"}
}

# launch_training SCRIPT ARGS...: SCRIPT's --help, or the Gaussian fitted where needed, the run directory
# printed, then SCRIPT with ARGS (the recipe's flags, then the user's)
launch_training() {
  local script=$1
  shift
  if wants_help "$@"; then
    exec "$PY" "$script" --help
  fi
  fit_centers_if_missing "$@"
  echo "run directory: $(flag_value --resume "$(flag_value --save_dir experiment/ "$@")" "$@")"
  exec "$PY" "$script" "$@"
}
