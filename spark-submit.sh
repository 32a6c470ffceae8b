#!/usr/bin/env bash
# Submit a lakecdp job to any Spark master with the right --py-files / --packages / --conf.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# job names: jobs/run_<name>.py, one per scheduled step of lakecdp.steps plus pipeline and demo
job_names() {
  local names=() path
  for path in "$ROOT"/jobs/run_*.py; do names+=("$(basename "$path" .py)"); done
  local joined="${names[*]#run_}"
  echo "${joined// /, }"
}

usage() {
  cat <<TXT
Usage: spark-submit.sh [options] JOB [job args...]

  JOB                 a file under jobs/ (e.g. jobs/run_pipeline.py) or a job name:
                      $(job_names)
Options:
  --master URL        local[N] | spark://host:7077 | yarn | k8s://https://host:port  (default: local[2])
  --deploy-mode MODE  client | cluster (default: client)
  --env NAME          lakecdp environment, passed to the job as --env (default: cluster, or local for local[*])
  --conf-dir DIR      lakecdp config folder, passed to the job as --conf (default: ./conf)
  --local-jars        use the Maven-resolved jars (make jars) in \$LAKECDP_JVM_DIR/spark-jars, else
                      .jvm/spark-jars, instead of --packages
  --python-env ARCH   a packed virtualenv (venv-pack / conda-pack .tar.gz) shipped with --archives and
                      used as the executors' Python (YARN / Kubernetes); default: this machine's .venv
  --spark-conf K=V    extra Spark setting (repeatable)
  --dry-run           print the spark-submit command instead of running it
  -h, --help          this help

Examples:
  ./spark-submit.sh --master local[2] pipeline
  ./spark-submit.sh --master spark://127.0.0.1:7077 --local-jars --env standalone jobs/run_pipeline.py
  ./spark-submit.sh --master yarn --deploy-mode cluster --python-env lakecdp-env.tar.gz identity
TXT
}

DELTA_PACKAGE="io.delta:delta-spark_4.2_2.13:4.4.0"
KAFKA_PACKAGE="org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0"

master="local[2]"; deploy_mode="client"; env_name=""; conf_dir="$ROOT/conf"
local_jars=0; python_env=""; dry_run=0; extra_conf=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --master) master="$2"; shift 2 ;;
    --deploy-mode) deploy_mode="$2"; shift 2 ;;
    --env) env_name="$2"; shift 2 ;;
    --conf-dir) conf_dir="$(cd "$2" && pwd)"; shift 2 ;;
    --local-jars) local_jars=1; shift ;;
    --python-env) python_env="$2"; shift 2 ;;
    --spark-conf) extra_conf+=(--conf "$2"); shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "spark-submit.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) break ;;
  esac
done
[[ $# -ge 1 ]] || { echo "spark-submit.sh: JOB is missing" >&2; usage >&2; exit 2; }
job="$1"; shift
if [[ ! -f "$job" ]]; then
  candidate="$ROOT/jobs/run_${job}.py"
  [[ -f "$candidate" ]] || { echo "spark-submit.sh: no job file $job or $candidate" >&2; exit 2; }
  job="$candidate"
fi
if [[ -z "$env_name" ]]; then
  [[ "$master" == local* ]] && env_name="local" || env_name="cluster"
fi

python="${PYSPARK_PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then python="$ROOT/.venv/bin/python"; else python="$(command -v python3)"; fi
fi
submit="${SPARK_HOME:+$SPARK_HOME/bin/}spark-submit"
if [[ -z "${SPARK_HOME:-}" && -x "$ROOT/.venv/bin/spark-submit" ]]; then submit="$ROOT/.venv/bin/spark-submit"; fi

# the package as one zip for --py-files (rebuilt every time: it is small and must match the code)
mkdir -p "$ROOT/build"
pyfiles="$ROOT/build/lakecdp-pyfiles.zip"
"$python" - "$ROOT/lib" "$pyfiles" <<'PY'
import pathlib, sys, zipfile
lib, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
    for path in sorted((lib / "lakecdp").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            archive.write(path, path.relative_to(lib))
PY

splink_jar="$("$python" -c 'from splink.backends.spark import similarity_jar_location as j; print(j())')"
args=(--master "$master" --deploy-mode "$deploy_mode" --name "lakecdp-$(basename "$job" .py)"
      --py-files "$pyfiles"
      --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension
      --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog
      --conf spark.sql.session.timeZone=UTC
      --conf spark.sql.ansi.enabled=true)
if [[ $local_jars -eq 1 ]]; then
  # the folder lakecdp.jvm resolves into and local sessions read ($LAKECDP_JVM_DIR, else .jvm/ here),
  # asked of this checkout's lakecdp (the one zipped above), so both always use the same jars
  lakecdp_jvm() { PYTHONPATH="$ROOT/lib${PYTHONPATH:+:$PYTHONPATH}" "$python" "$@"; }
  jars_dir="$(lakecdp_jvm -c 'from lakecdp.jvm import SPARK_JARS_DIR; print(SPARK_JARS_DIR)')"
  [[ -f "$jars_dir/.resolved" ]] || lakecdp_jvm -m lakecdp.jvm spark >/dev/null
  jars="$(ls "$jars_dir"/*.jar | tr '\n' ',')$splink_jar"
  args+=(--jars "$jars")
else
  args+=(--packages "$DELTA_PACKAGE,$KAFKA_PACKAGE" --jars "$splink_jar")
fi
if [[ -n "$python_env" ]]; then
  args+=(--archives "$python_env#environment"
         --conf spark.pyspark.python=./environment/bin/python
         --conf spark.pyspark.driver.python="$python")
else
  export PYSPARK_PYTHON="$python" PYSPARK_DRIVER_PYTHON="$python"
fi
args+=("${extra_conf[@]}")
cmd=("$submit" "${args[@]}" "$job" --conf "$conf_dir" --env "$env_name" "$@")
if [[ $dry_run -eq 1 ]]; then printf '%q ' "${cmd[@]}"; echo; exit 0; fi
exec "${cmd[@]}"
