"""What enable() needs to know about the pipelines of the hand-written video adapters (adapters/wan.py,
adapters/hunyuan_video.py); declared here, beside the rows' own pipeline declarations, because dype_rope.pipelines
imports the adapters."""

from dype_rope.pipelines import keep_scheduler_shift, patch_also

# Wan's pipelines set UniPC's flow_shift once (retrieve_timesteps without mu): a fixed, resolution-independent
# shift that enable() keeps, as the pinned policy keeps the training size's schedule.
WAN_PIPELINES = (
    "diffusers.pipelines.wan.pipeline_wan.WanPipeline",
    "diffusers.pipelines.wan.pipeline_wan_i2v.WanImageToVideoPipeline",
    "diffusers.pipelines.wan.pipeline_wan_vace.WanVACEPipeline",
    "diffusers.pipelines.wan.pipeline_wan_video2video.WanVideoToVideoPipeline",
    "diffusers.pipelines.lucy.pipeline_lucy_edit.LucyEditPipeline",
)
keep_scheduler_shift(*WAN_PIPELINES)

# Wan 2.2's two-expert pipelines denoise the steps above boundary_ratio with `transformer` and the rest with
# `transformer_2`: enable() patches both, or the low-noise steps, where DyPE still rescales, would run stock.
for _pipeline in WAN_PIPELINES:
    if not _pipeline.endswith(".WanVideoToVideoPipeline"):  # the one Wan pipeline without a second expert
        patch_also(_pipeline, "transformer_2")

# HunyuanVideo's pipelines keep the scheduler's fixed shift (retrieve_timesteps with sigmas, no mu): enable()
# keeps it too, instead of turning on a dynamic shift the pipeline never uses.
keep_scheduler_shift(
    "diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video.HunyuanVideoPipeline",
    "diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_image2video.HunyuanVideoImageToVideoPipeline",
    "diffusers.pipelines.hunyuan_video.pipeline_hunyuan_skyreels_image2video.HunyuanSkyreelsImageToVideoPipeline",
)
