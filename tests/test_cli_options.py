"""Options declared once: the CLI options generated from the config models (cli/model_options.py), and the
one SLURM vocabulary (contracts/slurm.py) with its translations for submitit and dask-jobqueue."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
import typer
import yaml
from pydantic import Field
from rich.text import Text
from typer.main import get_command
from typer.testing import CliRunner

from rsbench.benchmark.experiment import SlurmSpec
from rsbench.cli import app
from rsbench.cli import benchmark as cli_benchmark
from rsbench.cli.corpus import build_command
from rsbench.cli.evaluate import evaluate_command
from rsbench.cli.model_options import GIVEN, Opt, default_text, model_options, options_of
from rsbench.cli.pretrain import pretrain_command
from rsbench.contracts.corpus_build import CorpusBuildConfig, CorpusSlurm
from rsbench.contracts.pretrain_config import SlurmOptions
from rsbench.contracts.slurm import SlurmResources, format_walltime
from rsbench.errors import ConfigError
from rsbench.settings import StrictModel

runner = CliRunner()

# command path -> (function, {model name: documented exclusions})
COMMANDS = {
    ("pretrain",): (pretrain_command, {"PretrainConfig": {"recipe", "slurm"}, "SlurmOptions": {"extra"}}),
    ("corpus", "build"): (
        build_command,
        {"CorpusBuildConfig": {"inputs", "slurm"}, "CorpusSlurm": {"gpus_per_node", "signal_delay_s", "extra"}},
    ),
    ("evaluate",): (evaluate_command, {"EvaluateConfig": {"options", "tuned"}}),
    ("benchmark", "run"): (cli_benchmark.run_command, {"RunOptions": set()}),
    ("benchmark", "status"): (cli_benchmark.status_command, {"StatusOptions": set()}),
    ("benchmark", "export"): (cli_benchmark.export_command, {"ExportOptions": {"experiment"}}),
}


def _click_command(path: tuple[str, ...]):
    cmd = get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_every_field_has_one_option_with_its_description_and_default(path):
    fn, exclusions = COMMANDS[path]
    params = {p.name: p for p in _click_command(path).params}
    generated = options_of(fn)
    assert {g.model.__name__: set(g.excluded) for g in generated} == exclusions
    for g in generated:
        assert set(g.params) | g.excluded == set(g.model.model_fields), g.model.__name__
        for field_name, param_name in g.params.items():
            field = g.model.model_fields[field_name]
            param = params[param_name]  # exactly one option (click names are unique) per field
            assert param.default is None, f"{param_name}: 'not given' must leave config/model default in force"
            help_text = Text.from_markup(param.help).plain
            assert field.description and field.description in help_text, param_name
            default = default_text(field, "bool" if field.annotation is bool else "")
            if default is not None and field_name not in ("protocol", "seeds"):
                assert f"[default: {default}]" in help_text, (param_name, help_text)
    # The positional arguments and special options stay explicit.
    assert {"config"} <= set(params)


def test_help_lists_every_option():
    for path in COMMANDS:
        cmd = _click_command(path)
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.output
        for param in cmd.params:
            if param.param_type_name == "option":
                assert param.opts[0] in result.output, (path, param.opts[0])


def test_existing_names_aliases_and_panels_still_work():
    opts = {p.name: p for p in _click_command(("corpus", "build")).params}
    assert opts["input_lists"].opts == ["--input-list"] and opts["input_lists"].multiple
    assert set(opts["slurm_partition"].opts) == {"--slurm-partition", "--slurm-queue"}
    assert set(opts["slurm_time"].opts) == {"--slurm-time", "--slurm-walltime"}
    assert set(opts["slurm_cpus_per_task"].opts) == {"--slurm-cpus-per-task", "--slurm-cores"}
    assert set(opts["slurm_mem"].opts) == {"--slurm-mem", "--slurm-memory"}
    assert opts["dedup"].secondary_opts == ["--no-dedup"] and opts["dedup"].rich_help_panel == "Filters"
    assert opts["slurm_jobs"].rich_help_panel == "Parallel execution"
    export = {p.name: p for p in _click_command(("benchmark", "export")).params}
    assert set(export["out"].opts) == {"--out", "-o"}
    pretrain = {p.name: p for p in _click_command(("pretrain",)).params}
    assert pretrain["time"].opts == ["--time"] and pretrain["gpus_per_node"].opts == ["--gpus-per-node"]
    assert pretrain["resume"].secondary_opts == ["--no-resume"]


class _Toy(StrictModel):
    flag: bool = Field(True, description="A flag.")
    names: list[str] = Field(default_factory=lambda: ["a", "b"], description="Names.")
    files: list[str] = Field(default_factory=list, description="Files.")
    mode: Literal["fast", "slow"] = Field("fast", description="Mode.")
    size: int | None = Field(None, description="Size.")
    path: Path | None = Field(None, description="A path.")
    table: dict[str, Any] = Field(default_factory=dict, description="Not a flag.")


def _toy_app(seen: list[dict]) -> typer.Typer:
    toy = typer.Typer()

    @toy.command()
    @model_options(_Toy, exclude={"table"}, options={"files": Opt(repeat=True, aliases=("-f",))})
    def cmd(given: dict = GIVEN) -> None:
        seen.append(given)

    return toy


def test_bool_flags_lists_and_literals_parse():
    seen: list[dict] = []
    toy = _toy_app(seen)
    args = ["--no-flag", "--names", "x, y,,z", "-f", "1.tif", "--files", "2.tif", "--mode", "slow", "--size", "3"]
    assert runner.invoke(toy, [*args, "--path", "p"]).exit_code == 0
    assert seen[-1] == {
        "flag": False,
        "names": ["x", "y", "z"],
        "files": ["1.tif", "2.tif"],
        "mode": "slow",
        "size": 3,
        "path": Path("p"),
    }
    assert runner.invoke(toy, ["--flag"]).exit_code == 0 and seen[-1] == {"flag": True}
    assert runner.invoke(toy, []).exit_code == 0 and seen[-1] == {}, "nothing given: nothing overrides the config"
    help_text = runner.invoke(toy, ["--help"], env={"COLUMNS": "200"}).output
    assert "One of: fast, slow. [default: fast]" in help_text and "[default: a,b]" in help_text
    assert "[default: on]" in help_text and "--table" not in help_text


def test_a_field_without_command_line_form_must_be_excluded():
    with pytest.raises(TypeError, match="field 'table'"):
        model_options(_Toy)(lambda given=GIVEN: None)


def _pretrain_yaml(tmp_path: Path, images: Path, **more: Any) -> Path:
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump({"images": str(images), "out": str(tmp_path / "runs" / "from-file"), **more}))
    return path


def test_cli_overrides_config_file_overrides_model_default(tmp_path, eurosat_small):
    config = _pretrain_yaml(tmp_path, eurosat_small, slurm={"partition": "file-part", "account": "file-acc"})
    args = ["pretrain", "--config", str(config), "--slurm", "--dry-run", "--partition", "cli-part"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "runs" / "from-cli")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "#SBATCH --partition=cli-part" in lines  # CLI over the file
    assert "#SBATCH --account=file-acc" in lines  # the file's key of the same section stays
    assert "#SBATCH --time=60" in lines and "#SBATCH --signal=USR2@120" in lines  # model defaults
    assert "#SBATCH --job-name=rsbench-from-cli" in lines  # --out over the file's out
    # A bad value is reported with its key, whether it comes from the file or the command line.
    config = _pretrain_yaml(tmp_path, eurosat_small, image_size=4)
    result = runner.invoke(app, ["pretrain", "--config", str(config)])
    assert result.exit_code == 1 and "invalid config key 'image_size'" in result.stderr
    result = runner.invoke(app, ["pretrain", "--config", str(config), "--image-size", "32", "--log-every", "0"])
    assert result.exit_code == 1 and "invalid config key 'log_every'" in result.stderr


def test_evaluate_reports_the_bad_key(tmp_path):
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({"data": str(tmp_path), "init": "random", "knn_k": 5}))
    result = runner.invoke(app, ["evaluate", "--config", str(config), "--knn-temperature", "-1"])
    assert result.exit_code == 1 and "invalid config key 'knn_temperature'" in result.stderr


# ---- one SLURM vocabulary ----


def test_slurm_resources_translate_to_each_engine():
    res = SlurmResources(
        partition="gpu",
        account="abc",
        qos="q1",
        time="1-02:30:00",
        mem="64G",
        cpus_per_task=8,
        gpus_per_node=2,
        constraint="a100",
        job_name="j",
        setup=["module load x"],
        extra={"mail-type": "END", "--exclusive": True},
    )
    assert res.time == 26 * 60 + 30
    assert res.sbatch_parameters() == {
        "partition": "gpu",
        "account": "abc",
        "qos": "q1",
        "time": 1590,
        "mem": "64G",
        "cpus_per_task": 8,
        "gpus_per_node": 2,
        "constraint": "a100",
        "job_name": "j",
        "setup": ["module load x"],
        "additional_parameters": {"mail-type": "END", "exclusive": True},
    }
    assert res.submitit_parameters() == {
        "slurm_partition": "gpu",
        "slurm_account": "abc",
        "slurm_qos": "q1",
        "timeout_min": 1590,
        "slurm_mem": "64G",
        "cpus_per_task": 8,
        "gpus_per_node": 2,
        "slurm_constraint": "a100",
        "name": "j",
        "slurm_setup": ["module load x"],
        "slurm_additional_parameters": {"mail-type": "END", "exclusive": True},
    }
    assert res.jobqueue_kwargs() == {
        "queue": "gpu",
        "account": "abc",
        "walltime": "1-02:30:00",
        "cores": 8,
        "memory": "64GB",
        "job_name": "j",
        "job_extra_directives": [
            "--qos=q1",
            "--constraint=a100",
            "--gpus-per-node=2",
            "--mail-type=END",
            "--exclusive",
        ],
        "job_script_prologue": ["module load x"],
    }
    # gpus_per_node 0: a CPU-only job, no GPU directive anywhere.
    cpu = SlurmResources(gpus_per_node=0, time=90)
    assert "gpus_per_node" not in cpu.sbatch_parameters() and "gpus_per_node" not in cpu.submitit_parameters()
    assert cpu.jobqueue_kwargs() == {"walltime": "01:30:00"}
    assert format_walltime(59) == "00:59:00"
    with pytest.raises(ValueError, match="HH:MM:SS"):
        SlurmResources(time="soon")
    with pytest.raises(ValueError, match="unit"):
        SlurmResources(mem=64)


def test_submitit_keys_of_old_experiment_files_load_to_the_same_resources():
    old = {
        "timeout_min": 120,
        "gpus_per_node": 1,
        "cpus_per_task": 10,
        "mem_gb": 64,
        "slurm_partition": "gpu",
        "slurm_account": "acc",
        "slurm_qos": "qos_gpu-t3",
        "slurm_setup": ["module load cuda"],
        "slurm_signal_delay_s": 120,
        "slurm_additional_parameters": {"mail-type": "END"},
    }
    new = {
        "time": 120,
        "gpus_per_node": 1,
        "cpus_per_task": 10,
        "mem": "64GB",
        "partition": "gpu",
        "account": "acc",
        "qos": "qos_gpu-t3",
        "setup": ["module load cuda"],
        "signal_delay_s": 120,
        "extra": {"mail-type": "END"},
    }
    assert SlurmSpec(parameters=old).parameters == SlurmSpec(parameters=new).parameters
    spec = SlurmSpec(parameters={"timeout_min": 60, "slurm_partition": "gpu"}, pretrain={"timeout_min": 600})
    assert spec.resources("pretrain").submitit_parameters() == {"slurm_partition": "gpu", "timeout_min": 600}
    assert spec.resources("knn").submitit_parameters() == {"slurm_partition": "gpu", "timeout_min": 60}
    assert SlurmResources.from_submitit({"mem_gb": 1.5}) == {"mem": "1536MB"}
    with pytest.raises(ValueError, match="unknown SLURM key 'slurm_partitio'"):
        SlurmSpec(parameters={"slurm_partitio": "gpu"})
    with pytest.raises(ValueError, match="a second time"):
        SlurmSpec(parameters={"timeout_min": 5, "time": 6})


def _corpus(**kw: Any) -> CorpusBuildConfig:
    return CorpusBuildConfig(inputs=["/data/a.tif"], out="/tmp/c", tile_size=64, **kw)


def test_old_corpus_slurm_keys_load_and_leave_the_identity_alone():
    old = _corpus(
        slurm=True,
        slurm_queue="cpu",
        slurm_account="rs42",
        slurm_walltime="02:30:00",
        slurm_memory="8GB",
        slurm_cores=3,
        slurm_jobs=4,
    )
    assert old.slurm == CorpusSlurm(partition="cpu", account="rs42", time=150, mem="8GB", cpus_per_task=3, jobs=4)
    assert old == _corpus(
        slurm={"partition": "cpu", "account": "rs42", "time": 150, "mem": "8GB", "cpus_per_task": 3, "jobs": 4}
    )
    # A config saved by an older version (flat keys, SLURM off) loads; the keys did nothing and still do not.
    saved = {**_corpus().model_dump(mode="json"), "slurm": False, "slurm_queue": None, "slurm_walltime": "01:00:00"}
    saved.update(slurm_jobs=1, slurm_cores=4, slurm_memory="16GB", slurm_account=None)
    assert CorpusBuildConfig.model_validate(saved).slurm is None
    assert (
        old.output_settings()
        == _corpus().output_settings()
        == CorpusBuildConfig.model_validate(saved).output_settings()
    )
    assert "slurm" not in old.output_settings()
    assert _corpus(slurm=True).slurm == CorpusSlurm() and CorpusSlurm().jobqueue_kwargs()["walltime"] == "01:00:00"
    with pytest.raises(ValueError, match="scheduler or slurm"):
        _corpus(slurm=True, scheduler="tcp://x:8786")


def test_corpus_cli_old_and_new_slurm_flags(tmp_path, monkeypatch):
    import rsbench.corpus

    seen: list[CorpusBuildConfig] = []

    def fake_build(cfg, **kw):
        seen.append(cfg)
        raise ConfigError("stop here")

    monkeypatch.setattr(rsbench.corpus, "build_corpus", fake_build)
    base = ["corpus", "build", str(tmp_path), "--out", str(tmp_path / "c"), "--tile-size", "32"]
    old = [
        "--slurm",
        "--slurm-queue",
        "cpu",
        "--slurm-walltime",
        "02:00:00",
        "--slurm-cores",
        "2",
        "--slurm-memory",
        "4GB",
    ]
    result = runner.invoke(app, [*base, *old, "--slurm-jobs", "3"])
    assert "stop here" in result.stderr, result.output
    assert seen[-1].slurm == CorpusSlurm(partition="cpu", time=120, cpus_per_task=2, mem="4GB", jobs=3)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"slurm": {"partition": "file", "account": "acc"}, "bands": [3, 2, 1]}))
    result = runner.invoke(app, [*base, "--config", str(config), "--slurm-partition", "cli", "--no-dedup"])
    assert "stop here" in result.stderr, result.output
    assert seen[-1].slurm == CorpusSlurm(partition="cli", account="acc") and seen[-1].bands == [3, 2, 1]
    assert seen[-1].dedup is False and seen[-1].blank_filter is True
    result = runner.invoke(app, [*base, "--config", str(config), "--no-slurm"])
    assert seen[-1].slurm is None
    result = runner.invoke(app, [*base, "--slurm-queue", "cpu"])
    assert result.exit_code == 1 and "--slurm-partition only applies with --slurm" in result.stderr


def test_pretrain_slurm_on_a_cpu_only_cluster(tmp_path, eurosat_small):
    base = ["pretrain", "--images", str(eurosat_small), "--out", str(tmp_path / "r"), "--slurm", "--dry-run"]
    for extra in (["--accelerator", "cpu"], ["--gpus-per-node", "0"]):
        result = runner.invoke(app, [*base, "--devices", "4", *extra])
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert not any("gpu" in ln for ln in lines if ln.startswith("#SBATCH")), result.stdout
        assert "#SBATCH --ntasks-per-node=4" in lines
    result = runner.invoke(app, [*base, "--devices", "4"])  # GPUs follow --devices
    assert "#SBATCH --gpus-per-node=4" in result.stdout.splitlines(), result.output
    result = runner.invoke(app, [*base, "--accelerator", "cpu", "--gpus-per-node", "2"])
    assert result.exit_code == 1 and "--accelerator cpu requests no GPU" in result.stderr
    assert SlurmOptions().gpus_per_node is None and SlurmOptions(time="00:30:00").time == 30
