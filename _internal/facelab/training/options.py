"""SAEHD / Quick96 training options: DFL's names, defaults and ranges (dfl-spec §8.1).

Options marked `fixed` are chosen when a model is created and kept on resume; the others can be
changed by pressing Enter in the 2 seconds offered at start. Run-only options (device, model name,
...) are not stored with the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from facelab.core.landmarks import FACE_TYPE_CHOICES
from facelab.models.store import SWAP_MODELS
from facelab.options import option

CT_MODES = ("none", "rct", "lct", "mkl", "idt", "sot", "avg-color")


@dataclass(frozen=True)
class TrainOptions:
    # ---- run only (not saved with the model)
    model: str = option("Model", "saehd", choices=SWAP_MODELS, ask=False, help="which model to train")
    model_name: str = option("Model name", "", ask=False, help="model to load or create; default: the most recent, else 'new'")
    device: str = option("Device", "auto", ask=False, help="auto, cpu, cuda, cuda:1, mps")
    precision: str = option("Precision", "auto", choices=("auto", "fp32", "bf16", "fp16"), ask=False,
                            help="mixed precision (auto: bf16 where supported, fp16 on RTX 20xx/V100, fp32 on older GPUs; on a CPU "
                                 "bf16 where it is native, AVX512-BF16 or AMX, else fp32); fp32 forces full precision")  # fmt: skip
    compile: bool = option("torch.compile", False, ask=False, help="compile the training step on a GPU (slow start, faster steps; ignored on a CPU)")
    gpus: str = option("GPUs", "", ask=False,
                       help="train on several GPUs at once, e.g. 0,1 (DistributedDataParallel; the batch is split)")  # fmt: skip
    timelapse: bool = option("Timelapse", True, ask=False,
                             help="at each save, an image of the same few faces into model/<name>/timelapse/ "
                                  "(timelapse-video makes an mp4 of them); --no-timelapse turns it off")  # fmt: skip
    timelapse_src: str = option("Timelapse src faces", "", ask=False,
                                help="a folder of a few aligned src faces for the timelapse (default: an even sample of data_src)")  # fmt: skip
    timelapse_dst: str = option("Timelapse dst faces", "", ask=False,
                                help="a folder of a few aligned dst faces for the timelapse (default: an even sample of data_dst)")  # fmt: skip
    preview: bool = option("Preview window", True, ask=False,
                           help="show the preview window; --no-preview (or no display) trains headless, Ctrl+C saves and quits")  # fmt: skip
    pretraining_data_dir: str = option("Pretraining faceset", "", ask=False, help="aligned faces for pretrain mode")
    seed: int = option("Seed", 0, min=0, max=2**31 - 1, ask=False, help="random seed of a new model (0 = random)")
    memory_limit_gb: float = option("Memory limit (GB)", 0.0, min=0, max=4096, ask=False,
                                    help="how much memory training may use (0 = what the device has); --batch-size auto fits under it")  # fmt: skip
    memory_probe: bool = option("Memory probe", True, ask=False,
                                help="measure the memory of a new model's training with a short probe before the first step")  # fmt: skip
    autosave_minutes: float = option("Autosave every N minutes", 25.0, min=0, max=1440, ask=False,
                                     help="minutes between automatic saves (0 = after every iteration)")  # fmt: skip
    # ---- fixed when the model is created
    resolution: int = option("Resolution", 128, min=64, max=640, fixed=True,
                             help="face size the model works at; multiple of 16 (32 for -d archis); more = sharper, slower")  # fmt: skip
    face_type: str = option("Face type", "f", choices=FACE_TYPE_CHOICES, fixed=True,
                            help="h half, mf mid-full, f full, wf whole face (with forehead), head")  # fmt: skip
    archi: str = option("AE architecture", "liae-ud", choices=tuple(f"{k}{m}" for k in ("df", "liae") for m in
                        ("", "-u", "-d", "-t", "-ud", "-ut", "-dt", "-udt", "-c", "-uc", "-udc", "-udtc")),
                        fixed=True, help="df: more like the source face; liae: better at the dst's lighting and pose. "
                        "-u: better likeness, -d: double resolution at the same cost, -t: more detail, -c: cos activation")  # fmt: skip
    ae_dims: int = option("AutoEncoder dimensions", 256, min=32, max=1024, fixed=True, help="size of the face code")
    e_dims: int = option("Encoder dimensions", 64, min=16, max=256, fixed=True, help="encoder width")
    d_dims: int = option("Decoder dimensions", 64, min=16, max=256, fixed=True, help="decoder width")
    d_mask_dims: int = option("Decoder mask dimensions", 22, min=16, max=256, fixed=True, help="mask decoder width")
    # ---- changeable on resume
    autobackup_hour: float = option("Autobackup every N hour", 0.0, min=0, max=24, help="0 = off; keeps 24 backups")
    write_preview_history: bool = option("Write preview history", False, help="save a preview image every few iterations")
    target_iter: int = option("Target iteration", 0, min=0, max=10**9, help="stop and save at this iteration; 0 = never")
    random_src_flip: bool = option("Flip SRC faces randomly", False, help="more angles for the src face (y if few faces)")
    random_dst_flip: bool = option("Flip DST faces randomly", True, help="better generalisation of the dst faces")
    batch_size: int = option("Batch size", 0, min=1, max=512, auto=True,
                             help="faces per side per step; auto: the largest that fits in memory, measured by a short probe "
                                  "(at most 8 on a CPU, 32 on a GPU); lower it on memory errors")  # fmt: skip
    gradient_checkpointing: bool = option("Gradient checkpointing", False,
                                          help="recompute activations in the backward pass: less memory for big resolutions "
                                               "and batches, slower steps; the same weights (changeable on resume)")  # fmt: skip
    masked_training: bool = option("Masked training", True, ask=lambda v: v["face_type"] in ("wf", "head"),
                                   help="learn only inside the face mask (background is then ignored)")  # fmt: skip
    mask_type: str = option("Mask", "auto", choices=("auto", "components", "extended"), ask=False,
                            help="the face mask training learns: auto = the applied XSeg mask, else DFL's landmark hull; "
                                 "components / extended = faceswap's landmark masks (extended reaches the forehead)")  # fmt: skip
    eyes_mouth_prio: bool = option("Eyes and mouth priority", False, help="sharper eyes and teeth")
    uniform_yaw: bool = option("Uniform yaw distribution of samples", False, help="helps profile faces in a set of mostly frontal ones")
    blur_out_mask: bool = option("Blur out mask", False, help="blur the background near the face in the targets")
    adabelief: bool = option("Use AdaBelief optimizer", True, help="n = RMSprop")
    lr_dropout: str = option("Use learning rate dropout", "n", choices=("n", "y", "cpu"),
                             help="y: sharper faces late in training (turn on after the model has converged)")  # fmt: skip
    random_warp: bool = option("Enable random warp of samples", True, help="turn off late in training for detail")
    random_hsv_power: float = option("Random hue/saturation/light intensity", 0.0, min=0, max=0.3,
                                     help="colour jitter of the src input (0.05 is typical)")  # fmt: skip
    gan_power: float = option("GAN power", 0.0, min=0, max=5, help="adds detail late in training; 0.1 is typical")
    gan_patch_size: int = option("GAN patch size", 0, min=0, max=640, ask=lambda v: v["gan_power"] > 0,
                                 help="0 = resolution / 8")  # fmt: skip
    gan_dims: int = option("GAN dimensions", 16, min=4, max=512, ask=lambda v: v["gan_power"] > 0, help="discriminator width")
    true_face_power: float = option("'True face' power", 0.0, min=0, max=1, ask=lambda v: v["archi"].startswith("df"),
                                    help="df only: pulls the result toward the src identity; 0.01 is typical")  # fmt: skip
    face_style_power: float = option("Face style power", 0.0, min=0, max=100, help="learn the dst face's colour; start low")
    bg_style_power: float = option("Background style power", 0.0, min=0, max=100, help="learn the dst background")
    ct_mode: str = option("Color transfer for src faceset", "none", choices=CT_MODES,
                          help="recolour src faces toward random dst faces while training")  # fmt: skip
    clipgrad: bool = option("Enable gradient clipping", False, help="guards against collapse (slightly slower)")
    pretrain: bool = option("Enable pretraining mode", False, help="train on --pretraining-data-dir faces only")


RUN_ONLY = ("model", "model_name", "device", "precision", "compile", "gpus", "preview", "pretraining_data_dir", "seed",
            "memory_limit_gb", "memory_probe", "autosave_minutes", "timelapse", "timelapse_src", "timelapse_dst")  # fmt: skip


def model_options(opts: TrainOptions) -> dict:
    """The options stored with the model (everything but the run-only ones)."""
    from facelab.options import options_to_dict

    return {k: v for k, v in options_to_dict(opts).items() if k not in RUN_ONLY}
