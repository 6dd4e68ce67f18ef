"""Per-image quality for the automated labels, and the suite that validates it (docs/labeler.md).

- `score`: the score (statistics + classifier features -> boosted-trees discriminator -> [0, 1]);
- `build`: the steps end to end on arrays (train the classifier, fit the score, validate it);
- `degradations`, `validation`: fifteen failure families at three strengths, ROC AUC, the pass rule;
- `imagestats`, `classifier`, `inception`, `trees`: the parts;
- `rule`: the A/B label rule, tau calibrated on real images, the Frechet distance;
- `realism`: the previous score (k-NN realism on eleven statistics), kept as the baseline;
- `labels`: the per-seed labels CSV (read, validated, written, compared with people's).
"""
