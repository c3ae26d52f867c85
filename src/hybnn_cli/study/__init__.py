"""Studies (layer 8): each study module runs its study, records its result file and renders its
own generated blocks of the README and docs. The reproduction study (`reproduce`, its stage cache
`work_cache`, `reproduction_work`, `reproduction_report`, `reproduction_docs`, `exactness`); the
continual study (`continual_runs`, `continual_study`) and its learners that cannot forget
(`forgetproof_study`); the federated studies (`fed_*`); pretraining
at server scale (`ddp_scaling`, `union_encoder`); the kernels and the runtime (`bench_report`,
`gemm_peaks`, `int8_encoders`, `e2e_*`); the README's `headline`; result files with their
provenance (`provenance`); and `docgen`, the engine that fills the generated blocks.

May import: every layer below `cli`.
"""
