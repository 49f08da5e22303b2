"""Hand-off to other trainers: the plan as Megatron blends (``megatron_blends``) and as MosaicML
streaming shards (``mds_shards``), beside our own ordered mixed shards."""
