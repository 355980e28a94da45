learnat decompose /work/runs/spider-0.5b-v2/train.jsonl --teacher ast --db-root /work/shared/spider/database --trees /work/runs/spider-0.5b-v2/trees.jsonl --schema-format compact --unalias -o /work/runs/spider-0.5b-v2/decompositions.jsonl
learnat build-pairs /work/runs/spider-0.5b-v2/trees.jsonl -o /work/runs/spider-0.5b-v2/pairs.jsonl
learnat build-pairs /work/runs/spider-0.5b-v2/trees.jsonl --sft -o /work/runs/spider-0.5b-v2/sft.jsonl
learnat ask --input /work/runs/spider-0.5b-v2/eval.jsonl --db-root /work/shared/spider/database --adapter none --decompose never --backend auto --schema-format compact --rebind -o /work/runs/spider-0.5b-v2/ask-base-zero.jsonl
learnat eval /work/runs/spider-0.5b-v2/ask-base-zero.jsonl --db-root /work/shared/spider/database --metric spider --report /work/runs/spider-0.5b-v2/eval-base-zero.json > /work/runs/spider-0.5b-v2/eval-base-zero.jsonl
learnat ask --input /work/runs/spider-0.5b-v2/eval.jsonl --db-root /work/shared/spider/database --adapter none --decompose auto --backend auto --schema-format compact --rebind -o /work/runs/spider-0.5b-v2/ask-base-default.jsonl
learnat eval /work/runs/spider-0.5b-v2/ask-base-default.jsonl --db-root /work/shared/spider/database --metric spider --report /work/runs/spider-0.5b-v2/eval-base-default.json > /work/runs/spider-0.5b-v2/eval-base-default.jsonl
learnat sft /work/runs/spider-0.5b-v2/sft.jsonl -o /work/runs/spider-0.5b-v2/sft --resume --save-steps 5 --epochs 1.0 --batch-size 1 --grad-accum 16 --max-length 2048 --lora-layers 8 --lr 2e-4
