"""Writes course_notes.jsonl: the small training text set that ships with labkit.

Every sentence here was written for this course. Two kinds of notes come out:
- hand-written topics: each has a few ways to ask and a few ways to answer; every question is paired with every
  answer of its topic, and each pair is dressed in one of a few chat/instruction layouts;
- worked examples: small calculations (effective batch, weight bytes, Adam states, LoRA parameter counts,
  logits, checkpointed layer inputs) whose numbers the script computes, so they are right by construction.

The output is deterministic: run `python tools/make_course_notes.py` and the file comes out byte for byte the
same. Each note is 100 to 600 characters long.
"""
from __future__ import annotations

import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE.parent / "labkit" / "engine" / "course_notes.jsonl"   # tools/ sits beside labkit/
MIN_CHARS, MAX_CHARS = 100, 600

# ---- hand-written topics: (questions, answers) -------------------------------------------------------------------
TOPICS: list[tuple[list[str], list[str]]] = [
    (["Where does GPU memory go during fine-tuning?",
      "Why does training need so much more memory than inference?"],
     ["Four things share the card: the weights, the gradients of whatever is trained, the optimizer states, and "
      "the activations kept for the backward pass. Inference needs only the weights and a little working space, "
      "which is why a model that runs fine can still fail to train.",
      "The weights are only the start. Backward needs gradients, the optimizer keeps its own running statistics, "
      "and every layer stores some of its forward results so backward can use them. Add the logits for the loss "
      "and a training step can need several times the memory of the model itself."]),
    (["How big are the gradients?",
      "Do gradients take as much memory as the model?"],
     ["A gradient has one number per trained parameter, so it is as large as the part of the model being trained. "
      "In a full fine-tune that is the whole model again. With LoRA only the small adapter matrices get gradients, "
      "so this term almost disappears.",
      "Only for the parameters that are trained. Frozen weights get no gradient at all. That is one of the main "
      "savings of adapter methods: the gradient buffer shrinks from the size of the model to the size of the "
      "adapters, often well under one percent of it."]),
    (["What does the Adam optimizer keep in memory?",
      "Why is Adam so expensive in memory?"],
     ["Adam keeps two running averages for every trained parameter: one of the gradient and one of its square. "
      "Stored in fp32 that is eight bytes per parameter, twice the size of the fp32 weights themselves.",
      "For each trained value Adam remembers a first moment and a second moment, usually in 32-bit floats. "
      "That costs eight bytes per trained parameter. For a full fine-tune of a large model the optimizer states "
      "alone can outweigh the weights several times over."]),
    (["What is an 8-bit optimizer?",
      "How does 8-bit Adam save memory?"],
     ["An 8-bit optimizer stores Adam's two moments in one byte each instead of four, using block-wise "
      "quantization to keep them accurate enough. The states drop from about eight bytes per trained parameter "
      "to about two, and training quality usually stays the same.",
      "bitsandbytes can keep the optimizer states in 8 bits, with a separate scale for each small block of "
      "values. Each trained parameter then costs roughly two bytes of state instead of eight. With LoRA the "
      "states are small anyway, but the saving is free."]),
    (["What is a paged optimizer?",
      "Why does QLoRA use paged_adamw_8bit?"],
     ["A paged optimizer puts its states in memory that the GPU driver can move to the CPU when the GPU runs "
      "short, and bring back when it is needed. A brief spike, for example from one long sequence, then slows "
      "the step down instead of ending the run with an out-of-memory error.",
      "It combines two tricks: the Adam states are stored in 8 bits, and they live in unified memory that can "
      "spill to CPU RAM under pressure. The spill is slow but rare, and it turns a hard crash into a short "
      "pause."]),
    (["What are activations in a transformer?",
      "Why do activations need memory during training?"],
     ["Activations are the intermediate results of the forward pass: the inputs of each layer, the attention "
      "outputs, the hidden values inside the MLP. Backward needs many of them to compute gradients, so they "
      "are kept until the backward pass has used them.",
      "The chain rule needs the values that flowed forward. Autograd therefore saves tensors from every layer "
      "during the forward pass and frees them only in backward. Their total grows with batch size, sequence "
      "length, hidden size and the number of layers."]),
    (["Why are activations the bottleneck in QLoRA?",
      "Once the weights are in 4 bits, what fills the GPU?"],
     ["QLoRA shrinks the weights to about half a byte each and trains only small adapters, so gradients and "
      "optimizer states become tiny. What is left is the memory that grows with the data: the activations and "
      "the logits. That is why batch size and sequence length decide whether a run fits.",
      "Mostly the activations. The frozen 4-bit base is compact and the adapter states are small, but every "
      "token in the batch still leaves saved tensors in every layer. Doubling the batch or the sequence length "
      "roughly doubles this part."]),
    (["Why do the logits take so much memory?",
      "What is the logits trap in memory budgets?"],
     ["The logits hold one score per vocabulary entry for every token: batch times sequence times vocabulary "
      "numbers. For the loss they are usually turned into fp32, four bytes each, and the log-softmax and its "
      "gradient need buffers of the same size. With a large vocabulary this can beat all the layer activations.",
      "Many budgets forget the output layer. A model with a vocabulary of 128 thousand tokens produces a very "
      "wide tensor for every position, and the loss works on it in 32-bit floats. At long sequence lengths the "
      "logits alone can use gigabytes."]),
    (["What does gradient checkpointing do?",
      "How does activation checkpointing trade time for memory?"],
     ["It keeps only a few activations, such as the input of each decoder layer, and throws the rest away. "
      "During backward each layer is run forward again to rebuild what it needs. Memory for activations drops "
      "a lot, and the price is one extra forward pass per step.",
      "Instead of storing everything the forward pass produced, the model stores checkpoints and recomputes "
      "the missing pieces when backward reaches them. You pay extra compute to save memory, which is usually "
      "a good deal when the alternative is not fitting at all."]),
    (["How do I turn on gradient checkpointing in transformers?",
      "How can I check that checkpointing is active on my model?"],
     ["Call model.gradient_checkpointing_enable() before training, or pass gradient_checkpointing=True to "
      "TrainingArguments. The attribute model.is_gradient_checkpointing then reads True. Set use_cache=False "
      "as well, because a key-value cache is of no use while training.",
      "Look at model.is_gradient_checkpointing after enabling it. Transformers wraps every decoder layer, so "
      "the memory left is roughly one saved input per layer plus the full activations of the one layer that "
      "is being recomputed."]),
    (["How much slower is training with gradient checkpointing?",
      "Why does checkpointing cost more with a frozen 4-bit base?"],
     ["A normal step is roughly one forward and a backward that costs about two forwards. Checkpointing adds a "
      "forward, so around a third more work. With a frozen base the backward skips the weight gradients and "
      "is cheaper, so the extra forward weighs more, closer to half again.",
      "The extra cost is one more forward pass. When every weight is trained, backward is about twice a "
      "forward, so the overhead is near 33 percent. When the base is frozen, backward only passes gradients to "
      "the inputs, the step is lighter, and the same extra forward is a bigger share."]),
    (["What is the square root trick in checkpointing?",
      "How many checkpoints should a network keep?"],
     ["If a network of N layers is cut into about the square root of N segments and only segment boundaries "
      "are stored, memory grows like the square root of N instead of N, and the cost is a single extra forward. "
      "Transformers libraries usually simply checkpoint every layer instead.",
      "Keeping a checkpoint every few layers balances two costs: stored boundaries and the activations of one "
      "segment being rebuilt. The classic result is that about square root of N segments is a good choice. In "
      "practice, checkpointing each decoder layer is simple and works well."]),
    (["What is the effective batch size?",
      "How do micro-batch and gradient accumulation relate?"],
     ["The effective batch is the number of sequences behind one optimizer step: the micro-batch times the "
      "number of accumulation steps times the number of GPUs. Only the micro-batch has to fit in memory at "
      "once; the rest is spread out over time or over devices.",
      "The micro-batch is what one forward and backward sees. Gradient accumulation adds up the gradients of "
      "several micro-batches before the optimizer moves. Multiply the two, and the GPU count, to get the batch "
      "that the learning rate actually feels."]),
    (["Should I set a batch size or a micro-batch?",
      "Why set micro-batch and accumulation instead of a single batch size?"],
     ["Set the micro-batch and the number of accumulation steps, and let the effective batch follow. The "
      "micro-batch decides memory, the accumulation decides how many sequences inform each update. A single "
      "batch number hides which of the two you meant.",
      "Because memory depends only on the micro-batch. If you know the effective batch you want, divide it by "
      "the micro-batch and the number of GPUs to get the accumulation steps, and memory stays where the "
      "micro-batch put it."]),
    (["When does the optimizer step happen with gradient accumulation?",
      "Does the learning rate schedule count micro-batches?"],
     ["The optimizer steps once per accumulation cycle, after the last micro-batch of the cycle. The schedule, "
      "the warmup and the logged loss all advance per optimizer step. Wall time, though, grows with the number "
      "of micro-batches, since each one still needs its own forward and backward.",
      "No. Warmup and decay move once per optimizer step, which is once per full set of accumulated "
      "micro-batches. Log the loss at the same rate, averaged over the cycle, or the curve will look noisier "
      "than the training really is."]),
    (["Is gradient accumulation exactly the same as a big batch?",
      "What is the token count pitfall with accumulation?"],
     ["Only if the loss is averaged over all tokens of the whole effective batch. If each micro-batch averages "
      "over its own tokens and the results are averaged again, short and long batches get equal weight and the "
      "gradient differs from the big-batch one.",
      "When sequences have different lengths, averaging the loss inside each micro-batch and then across "
      "micro-batches weights tokens unevenly. The fix is to sum the token losses and divide by the total token "
      "count of the whole accumulation cycle. Then accumulation matches one large batch."]),
    (["How do I find the largest micro-batch that fits?",
      "How does a batch size search handle out-of-memory errors?"],
     ["Try a real forward and backward at a candidate size. If it raises torch.OutOfMemoryError, catch it, "
      "free the memory and try a smaller size; if it works, try a larger one. A binary search between the last "
      "good and the first bad size finds the limit in a few tries.",
      "Each trial runs one full training step. On an out-of-memory error the search drops every reference to "
      "the failed tensors, collects garbage, empties the CUDA cache and carries on with a smaller size. The "
      "largest size that passed is the answer, minus a little margin for safety."]),
    (["My run is out of memory. What should I reduce first?",
      "In what order should I shrink things to fit in memory?"],
     ["Lower the micro-batch first and raise the accumulation steps so the effective batch stays the same. If "
      "a micro-batch of one still does not fit, shorten the sequence length. Lowering the LoRA rank comes last, "
      "because adapters use little memory anyway.",
      "Start with the micro-batch, since it changes memory without changing what the model learns, as long as "
      "accumulation makes up for it. Then consider shorter sequences. The rank of the adapters hardly moves "
      "the total, so it is the last knob to touch."]),
    (["How are fp32, fp16 and bf16 different?",
      "What do the exponent and mantissa bits mean for training?"],
     ["fp32 has 8 exponent bits and 23 mantissa bits. fp16 has 5 exponent bits and 10 mantissa bits, so it "
      "tops out near 65,504. bf16 keeps the 8 exponent bits of fp32 with only 7 mantissa bits: the same range, "
      "less precision.",
      "The exponent sets the range, the mantissa sets the precision. bf16 gives up precision but keeps the "
      "range of fp32, while fp16 keeps more precision in a much narrower range. For training, running out of "
      "range hurts more than losing a few digits."]),
    (["Why does fp16 training need loss scaling?",
      "What does a gradient scaler do?"],
     ["Small gradients can fall below the smallest number fp16 can hold and turn into zero. Multiplying the "
      "loss by a large factor lifts them into range. The gradients are divided by the same factor before the "
      "optimizer step, and steps with inf or nan are skipped while the factor is lowered.",
      "torch.amp.GradScaler multiplies the loss before backward, unscales the gradients before the update, "
      "skips any step whose gradients overflowed, and adjusts the scale over time. The Trainer does all of "
      "this for you when fp16 is switched on."]),
    (["Does a T4 support bf16?",
      "Which GPUs run bf16 natively?"],
     ["Native bf16 arrived with compute capability 8.0, the Ampere generation: A100, RTX 30 series and newer. "
      "A T4 has compute capability 7.5, so it should train in fp16 with loss scaling, and its 4-bit compute "
      "dtype should be float16 too.",
      "Check the compute capability, not a yes-or-no helper. From 8.0 upward bf16 runs in hardware. Below that, "
      "as on a T4 at 7.5, choose fp16. torch.cuda.is_bf16_supported() may say True on older cards because the "
      "type can be emulated, which is slow."]),
    (["Why should I not trust torch.cuda.is_bf16_supported on older GPUs?",
      "How should the code pick a precision automatically?"],
     ["The function can report True where bf16 works only through emulation. Training then runs, but slower, "
      "and you have no idea why. Read torch.cuda.get_device_capability() and use bf16 only when the major "
      "version is 8 or higher.",
      "Decide from the hardware: bf16 when the compute capability is at least 8.0, fp16 on older CUDA cards, "
      "and fp32 on the CPU. A setting named auto should follow exactly that rule, so the same notebook does the "
      "right thing on a T4 and on an A100."]),
    (["What is the 4-bit compute dtype in bitsandbytes?",
      "What goes wrong if bnb_4bit_compute_dtype is bf16 on a T4?"],
     ["The 4-bit weights are stored packed and turned back into a normal float type just before each matrix "
      "multiply. bnb_4bit_compute_dtype names that type. It should match the training precision: float16 on "
      "a T4, bfloat16 on Ampere and newer.",
      "The card has no fast bf16 path, so every layer does its matrix multiplies in a slow emulated type, and "
      "the dtype may also clash with fp16 autocast elsewhere in the model. On a T4 set the compute dtype to "
      "torch.float16."]),
    (["What is NF4?",
      "Why does QLoRA use the NormalFloat 4-bit format?"],
     ["NF4 is a 4-bit data type whose sixteen levels are placed where normally distributed values are most "
      "likely to land. Pretrained weights are roughly bell-shaped, so these levels waste less precision than "
      "evenly spaced ones. Each block of weights has its own scale.",
      "Weights of a trained network cluster around zero. NF4 puts its sixteen code points at quantiles of a "
      "normal distribution, so each code is used about equally often. That keeps more information than plain "
      "4-bit integers at the same size."]),
    (["What is double quantization?",
      "Why quantize the quantization constants?"],
     ["Each small block of 4-bit weights needs a scale stored in higher precision, and those scales add up. "
      "Double quantization stores the scales themselves in 8 bits, with a second, coarser level of scales. It "
      "saves roughly a third of a bit per parameter.",
      "With blocks of 64 weights and a 32-bit scale per block, the scales cost half a bit per weight. "
      "Quantizing the scales again brings that overhead down to a fraction of that. On large models this is "
      "several hundred megabytes."]),
    (["How do I load a model in 4 bits with transformers?",
      "What does a typical BitsAndBytesConfig for QLoRA look like?"],
     ["Pass a BitsAndBytesConfig with load_in_4bit=True, bnb_4bit_quant_type set to nf4, "
      "bnb_4bit_use_double_quant=True, and a compute dtype that suits the GPU. Give it to from_pretrained as "
      "quantization_config. The linear layers are then replaced by 4-bit versions as the model loads.",
      "Four settings matter: load in 4 bits, use the nf4 quant type, turn on double quantization, and choose "
      "the compute dtype, float16 on a T4 and bfloat16 where the card supports it. Everything else can stay at "
      "its default for a first run."]),
    (["What is LoRA?",
      "How does a low-rank adapter work?"],
     ["LoRA freezes the original weight matrix and learns a small correction next to it: the product of two "
      "thin matrices, B times A, with an inner size r called the rank. Only A and B are trained, so a layer "
      "with millions of weights may train only tens of thousands.",
      "The adapter adds a detour beside a frozen linear layer. The input goes through A, which squeezes it to "
      "r numbers, then through B, which expands it back, and the result is added to the layer's output. B "
      "starts at zero, so training begins from the original model."]),
    (["How many parameters does a LoRA adapter add?",
      "How do I count LoRA parameters for one layer?"],
     ["For a linear layer with d_in inputs and d_out outputs, A has r times d_in values and B has d_out times "
      "r. The adapter adds r times (d_in plus d_out). Sum that over every targeted projection in every layer "
      "to get the trainable count.",
      "Multiply the rank by the sum of the layer's input and output widths. With grouped-query attention the "
      "key and value projections are narrower than the query projection, so their adapters are smaller too."]),
    (["What do lora_alpha and the rank control?",
      "Why is the LoRA scale alpha divided by r?"],
     ["The adapter output is multiplied by alpha divided by r. Keeping that ratio fixed lets you change the "
      "rank without retuning the learning rate much. A common start is r of 16 with alpha of 32, a scale of "
      "two.",
      "The rank sets how much the adapter can express. Alpha sets how strongly its output is mixed in, through "
      "the factor alpha over r. Raising the rank alone would otherwise change the size of the update, which "
      "the division compensates for."]),
    (["Which modules should LoRA target?",
      "Should I put adapters on the MLP layers too?"],
     ["The attention projections q, k, v and o are the usual starting point. Adding gate, up and down in the "
      "MLP gives more capacity and often better results, at the cost of more adapter parameters. Memory rises "
      "a little, mostly through the extra saved inputs.",
      "You can. The MLP projections are wide, so their adapters hold more parameters than the attention ones. "
      "For a first run, attention only is fine. If quality falls short, targeting all linear layers is a "
      "common next step."]),
    (["Does a higher LoRA rank use much more memory?",
      "How does the rank affect training memory?"],
     ["Less than most people expect. The adapter weights, their gradients and their optimizer states all grow "
      "with the rank, but they start tiny. Going from rank 16 to 64 usually adds megabytes, while one more "
      "sequence in the micro-batch can add far more.",
      "The rank scales the adapter terms, which are small next to the frozen weights and the activations. "
      "The adapter's narrow hidden values are also saved for backward, but they are r wide, not as wide as "
      "the model. Rank is rarely the reason a run does not fit."]),
    (["What is lora_dropout for?",
      "Does dropout in LoRA change memory?"],
     ["It randomly zeroes parts of the adapter's input during training, which can help against overfitting on "
      "small datasets. A value around 0.05 is common. It costs a little memory, because the dropout mask or "
      "the dropped input is kept for backward.",
      "Dropout on the adapter input acts as a mild regulariser. Since the dropped copy of the input is saved "
      "for the backward pass, turning it off saves a small amount of activation memory per targeted layer."]),
    (["Why pad every batch to the same length?",
      "How does padding to a constant length help memory?"],
     ["When every batch has the same shape, the tensors of each step have the same sizes, and the CUDA caching "
      "allocator can reuse the blocks it kept from the previous step. Changing shapes leave odd-sized free "
      "blocks behind, and reserved memory grows while allocated memory does not.",
      "Constant shapes make memory use repeat exactly from step to step. Variable lengths waste less compute "
      "but cause fragmentation: the allocator holds many blocks that fit no new request, and a run can fail "
      "with free memory that is split into useless pieces."]),
    (["What is the difference between allocated and reserved memory?",
      "Why does nvidia-smi show more memory than PyTorch reports?"],
     ["Allocated memory is what live tensors use right now. Reserved memory is what the caching allocator "
      "holds from the driver, including freed blocks it keeps for reuse. Reserved is always at least "
      "allocated; a large gap points to fragmentation.",
      "nvidia-smi sees everything the process took from the driver: the reserved pool of the caching "
      "allocator plus the CUDA context and library workspaces, often several hundred megabytes. PyTorch's "
      "memory_allocated counts live tensors only."]),
    (["How do I measure peak GPU memory of a training step?",
      "Which PyTorch functions report peak memory?"],
     ["Call torch.cuda.reset_peak_memory_stats() before the step, run forward, backward and the optimizer "
      "step, then read torch.cuda.max_memory_allocated() and torch.cuda.max_memory_reserved(). Synchronize "
      "first, so that all queued work has really finished.",
      "max_memory_allocated gives the highest amount live tensors reached since the last reset. "
      "max_memory_reserved gives the high point of the allocator's pool. Report both, and do one warm-up step "
      "first, because the first step also allocates one-time buffers."]),
    (["Why should eval use the same micro-batch as training?",
      "Can a larger eval batch cause an out-of-memory error?"],
     ["Evaluation needs no gradients, so a larger eval batch seems safe, but it changes the shapes the allocator "
      "sees and can fragment the pool the training steps rely on. Using the training micro-batch keeps memory "
      "predictable.",
      "Yes. Without saved activations a bigger batch may fit in theory, yet the logits still grow with batch "
      "and sequence, and new shapes fragment the cache. Many runs that trained fine have crashed at their "
      "first evaluation for this reason."]),
    (["Why should I save checkpoints often?",
      "Can an out-of-memory error damage a checkpoint?"],
     ["A long run can fail at any point, and an error in the middle of saving can leave a broken file. Saving "
      "every few hundred steps means you lose little work, and keeping the last two checkpoints protects you "
      "from a half-written one.",
      "It can if it strikes while the checkpoint is being written. Save regularly by steps rather than only at "
      "the end of an epoch, and keep more than one checkpoint so there is always a complete one to resume "
      "from."]),
    (["Why are the embeddings not quantized in QLoRA?",
      "Which parts of a 4-bit model stay in 16 bits?"],
     ["bitsandbytes replaces the linear layers inside the decoder blocks. The token embedding, the output head "
      "and the norm weights keep their 16-bit type. With a large vocabulary the embedding and head are a big "
      "share of a small model, so the real size is more than half a byte per parameter.",
      "The embedding table, the language model head and the small norm vectors stay in half precision. For a "
      "one-billion-parameter model with a vocabulary of 128 thousand, the embedding alone is about a fifth "
      "of the parameters, so a budget that counts everything at 4 bits comes out too low."]),
    (["What does prepare_model_for_kbit_training do?",
      "Do I need prepare_model_for_kbit_training for QLoRA?"],
     ["The peft helper casts the norm layers and some other small parts to fp32 for stability, enables input "
      "gradients so checkpointing works with a frozen embedding, and can turn on gradient checkpointing. The "
      "fp32 casts cost extra memory.",
      "It is common but not required. It upcasts some layers to fp32 and sets up gradient checkpointing. On a "
      "tight budget you can skip the upcast and only call enable_input_require_grads, which checkpointing "
      "with frozen inputs needs."]),
    (["Why does checkpointing need input gradients with a frozen embedding?",
      "What does enable_input_require_grads fix?"],
     ["With reentrant checkpointing, a checkpointed block whose inputs need no gradient gets no backward at "
      "all. When the embedding is frozen, the hidden states start without requires_grad, and the adapters "
      "inside the blocks would get no gradient. Marking the embedding output as needing gradients fixes that.",
      "It registers a hook that makes the embedding output require gradients. Without it, some checkpointing "
      "modes see inputs that need no gradient, skip the backward of the block, and the LoRA weights inside "
      "quietly stop learning."]),
    (["What is the CUDA out of memory error telling me?",
      "How do I read a torch.OutOfMemoryError message?"],
     ["It says how much the failed allocation asked for, how much the GPU holds in total, how much PyTorch "
      "has allocated and how much is reserved but unallocated. A large reserved-but-unallocated figure hints "
      "at fragmentation rather than a plain lack of memory.",
      "Read the amount it tried to allocate and compare it with the free memory. If the request is small and "
      "the reserved pool is large, the memory is there but broken into pieces. Constant shapes or the "
      "expandable segments option of the allocator can help."]),
    (["What does PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True do?",
      "How can the allocator reduce fragmentation?"],
     ["It lets the caching allocator grow memory segments in place instead of asking for many fixed blocks. "
      "Tensors of changing sizes then fit into the same segments more easily, and the gap between reserved and "
      "allocated memory usually shrinks. Set it before CUDA is first used.",
      "The expandable segments setting maps more memory into an existing segment when it needs to grow. That "
      "avoids the patchwork of odd-sized blocks that variable shapes leave behind. It must be in the "
      "environment before the process touches the GPU."]),
    (["Why is a KV cache turned off during training?",
      "What does use_cache=False do when fine-tuning?"],
     ["The key-value cache speeds up generation one token at a time. In training the whole sequence is "
      "processed at once, so the cache is useless and only takes memory. With gradient checkpointing it also "
      "conflicts with recomputation, so transformers switches it off.",
      "It stops the model from keeping keys and values for later tokens. A training step never generates, so "
      "a cache would be memory spent for nothing, and checkpointing would rebuild it anyway. Turn it back on "
      "for inference."]),
    (["Does attention memory grow with the square of the sequence length?",
      "What changes with scaled dot product attention kernels?"],
     ["A plain attention implementation builds a score matrix of sequence length squared per head, and keeps it "
      "for backward. Fused kernels such as flash or memory-efficient attention never store that matrix, so "
      "their memory grows only linearly with the sequence.",
      "PyTorch's scaled_dot_product_attention picks a fused kernel when it can. Those kernels compute the "
      "softmax in tiles and recompute what they need in backward, so the squared score matrix is never held "
      "in memory. The rest of the layer still grows linearly."]),
    (["What is sample packing?",
      "Why would I pack several short examples into one sequence?"],
     ["Packing joins several short examples into one full-length sequence, so fewer positions are wasted on "
      "padding. It raises throughput, but attention must not let one example see another, which needs special "
      "masks or a kernel that understands sequence boundaries.",
      "When most examples are short, padding every one to the full length wastes compute. Packing fills each "
      "row with several examples end to end. It keeps shapes constant too, but the model must be told where "
      "each example starts."]),
    (["How much memory does a full fine-tune of a 7B model need?",
      "Why can't I fully fine-tune a 7B model on a 16 GB card?"],
     ["In mixed precision you store 16-bit weights and 16-bit gradients, fp32 master weights, and two fp32 "
      "Adam moments: about 16 bytes per parameter. For seven billion parameters that is over 100 GB before "
      "any activations, far beyond a single 16 GB card.",
      "Counting 2 bytes for weights, 2 for gradients, 4 for master weights and 8 for Adam, each parameter "
      "needs about 16 bytes. Seven billion of them need over a hundred gigabytes. QLoRA cuts the frozen "
      "weights to half a byte and trains only adapters, which is why it fits."]),
    (["Why does QLoRA fit an 8B model on a T4?",
      "What does a memory budget for 8B QLoRA on 16 GB look like?"],
     ["The frozen base takes around 5 GB in 4 bits, a little more than half a byte per parameter because the "
      "embeddings and head stay in 16 bits. Adapters, their gradients and 8-bit optimizer states add well "
      "under a gigabyte. The rest of the card is left for activations and logits.",
      "Roughly: 5 GB of quantized weights, a few hundred megabytes for the adapters and their training state, "
      "and several gigabytes of activations depending on batch and sequence length. With checkpointing and a "
      "small micro-batch the total stays under the 15 GB a T4 offers."]),
    (["What is the Tesla T4?",
      "What should I expect from a free Colab GPU?"],
     ["The T4 is a Turing-generation card with 16 GB of memory and compute capability 7.5. It has fast fp16 "
      "tensor cores but no native bf16. Colab often hands it out for free, which makes it the reference card "
      "for small fine-tuning courses.",
      "Usually a T4: about 15 GB of usable memory, good fp16 speed, no bf16. Sessions can end after some hours "
      "and the GPU is not always available, so keep runs short and save your work often."]),
    (["How do I time a training step correctly?",
      "Why is the first training step slower?"],
     ["GPU work runs asynchronously, so call torch.cuda.synchronize() before reading the clock at both ends. "
      "Do one or two warm-up steps first: they include kernel selection, memory allocation and lazy "
      "initialization that later steps do not pay for.",
      "The first step sets up cuBLAS handles, picks kernels, fills the allocator's cache and may compile code. "
      "Measure from the second or third step, synchronize before each clock reading, and average a few steps."]),
    (["What does tokens per second measure?",
      "How do I compare throughput between two settings?"],
     ["It is the number of training tokens processed per second of wall time: micro-batch times sequence "
      "length divided by the step time. It lets you compare settings with different batch sizes on an equal "
      "footing. Count padding only if you say so.",
      "Divide the tokens in a step by its measured time, after warm-up. A setting that fits a larger "
      "micro-batch often gets more tokens per second even if each step is slower. Compare tokens per second, "
      "not step times, when batch sizes differ."]),
    (["What learning rate should I use with LoRA?",
      "Why is a short warmup useful for LoRA training?"],
     ["Adapters are usually trained with higher learning rates than full fine-tunes; 2e-4 is a common start "
      "for QLoRA. A short warmup, a few percent of the steps, keeps the first updates from being too large "
      "while the optimizer statistics settle.",
      "At the start Adam's moment estimates rest on very few gradients, and early updates can be erratic. "
      "Ramping the learning rate up over the first few percent of the steps avoids that. Since B starts at "
      "zero, the first updates also decide where the adapter heads."]),
    (["Does data parallel training reduce memory per GPU?",
      "How does the number of GPUs enter the effective batch?"],
     ["Plain data parallelism gives each GPU a full copy of the model and a share of the batch. Memory per GPU "
      "does not drop; throughput rises. The effective batch is multiplied by the number of GPUs, so fewer "
      "accumulation steps are needed for the same batch.",
      "Each GPU runs its own micro-batch, and the gradients are averaged across GPUs before the step. Four GPUs "
      "with a micro-batch of two and four accumulation steps update on 32 sequences. Sharding methods are "
      "needed if the model itself does not fit on one card."]),
    (["Why are CPU measurements labelled separately from GPU ones?",
      "Can I trust memory numbers measured on a CPU?"],
     ["On a CPU there is no CUDA allocator, no 4-bit kernels and no fp16 tensor cores, so the numbers describe "
      "a different machine. They are still real measurements of saved tensors and step time, and the course "
      "labels them as CPU results, never as GPU ones.",
      "They measure what they measure: the bytes of tensors saved for backward and the time of a CPU step. The "
      "saved activation bytes follow the same shapes as on a GPU, but peak memory and speed do not carry over. "
      "A label on every number keeps that clear."]),
    (["What is the difference between a measured number and a theory number?",
      "Why show the formula next to the measurement?"],
     ["A measured number comes from running the code and reading a counter. A theory number comes from a "
      "formula with the model's shape. Putting them side by side shows where the formula is right, where it "
      "misses something, and by how much.",
      "The formula explains why memory grows, and the measurement keeps the formula honest. When they disagree "
      "the difference is a lesson in itself, for example a buffer the formula forgot or an allocator that "
      "rounds up."]),
    (["What is a stand-in result?",
      "Why are replayed results labelled?"],
     ["A stand-in is a number that was not produced by your own run: a result recorded earlier on another "
      "machine, or a figure simulated on a small model. It is useful when no GPU is available, as long as it "
      "is clearly marked so nobody takes it for a live measurement.",
      "In a workshop some learners may get no GPU. Showing results recorded earlier on a real card lets them "
      "follow along, but each of those numbers carries a label saying where and when it was recorded."]),
    (["How does sequence length change memory?",
      "What happens to memory when I double the context length?"],
     ["Most activation terms grow linearly with the number of tokens, so doubling the length roughly doubles "
      "them. The logits grow linearly too. Without a fused attention kernel the attention scores grow with the "
      "square of the length and soon dominate.",
      "With fused attention, roughly twice the activations and twice the logits. The weights and optimizer "
      "states do not change. That is why the sequence length is the second knob to turn when a run does not "
      "fit, right after the micro-batch."]),
    (["Why does batch size multiply activation memory?",
      "If batch 1 needs 500 MB of activations, what does batch 8 need?"],
     ["Every sequence in the micro-batch leaves its own saved tensors in every layer, so activation memory is "
      "proportional to the micro-batch. Eight sequences need about eight times the activations of one. The "
      "fixed costs, like weights, stay the same.",
      "About eight times as much, roughly four gigabytes, because each sequence keeps its own activations. The "
      "weights and optimizer states are shared by the whole batch, so the total grows less than eight-fold, "
      "but the activation part scales fully."]),
    (["What is gradient clipping and does it cost memory?",
      "Why clip gradients when fine-tuning?"],
     ["Clipping rescales the gradients when their overall norm is above a limit, such as 1.0, so that one bad "
      "batch cannot throw the weights far off. It needs only a few small temporary buffers, so its memory cost "
      "is negligible.",
      "A rare batch can produce a huge gradient. Clipping the total norm keeps such an update in bounds. With "
      "fp16 and a gradient scaler, unscale the gradients first, otherwise the limit is applied to the scaled "
      "values."]),
    (["How do I use a trained LoRA adapter afterwards?",
      "Should I merge the adapter into the base model?"],
     ["You can keep the adapter as a small separate file and load it on top of the base model, or merge it so "
      "the weights include the change. Merging into a 4-bit model is lossy, so merge into a 16-bit copy of the "
      "base if you want one standalone model.",
      "Keeping adapters separate lets one base model serve many tasks and keeps files small. Merging removes "
      "the small extra cost at inference time. Either way, the adapter file itself is only megabytes."]),
    (["Why does memory keep growing between steps?",
      "How can I tell a memory leak from normal caching?"],
     ["Check allocated memory at the same point of every step. If it climbs, something keeps references, for "
      "example a list of loss tensors that still hold their graphs; store loss.item() instead. If only "
      "reserved memory grows, the allocator is caching, which is expected.",
      "Normal caching makes reserved memory rise during the first steps and then stay flat. A leak makes "
      "allocated memory grow step after step. Common causes are keeping tensors that are attached to the graph "
      "or accumulating outputs on the GPU."]),
    (["What is the difference between zero_grad and set_to_none?",
      "Does clearing gradients free memory?"],
     ["optimizer.zero_grad(set_to_none=True), the default in recent PyTorch, drops the gradient tensors "
      "instead of filling them with zeros. The memory is handed back to the allocator until the next backward "
      "creates new gradients, which lowers the memory between steps.",
      "Setting gradients to None frees them; filling them with zeros keeps them allocated. With accumulation, "
      "clear only after the optimizer step, never between micro-batches, or the accumulated gradient is "
      "lost."]),
    (["What does torch.cuda.empty_cache do?",
      "Will emptying the CUDA cache fix an out-of-memory error?"],
     ["It hands the unused blocks held by PyTorch's caching allocator back to the driver. Live tensors are not "
      "touched, so it cannot free memory that is still in use. It mainly helps other processes, or a search "
      "that retries after a failed step.",
      "Rarely on its own. The cached blocks are reused by PyTorch anyway, so returning them to the driver only "
      "matters if another program needs them. After catching an out-of-memory error, first drop the references "
      "to the failed tensors, then collect garbage and empty the cache."]),
    (["Why does my loss become nan in fp16?",
      "What causes inf values when training in half precision?"],
     ["Something overflowed the fp16 range of about 65 thousand, often inside attention or a large activation. "
      "Loss scaling protects the gradients, not the forward pass. Keeping the norms and the loss in fp32, or "
      "moving to bf16 on hardware that supports it, usually cures it.",
      "Values above 65,504 become inf in fp16, and inf minus inf gives nan. A gradient scaler skips such steps "
      "now and then, which is normal. If every step is skipped, the forward pass itself overflows, and fp32 "
      "for the sensitive parts or bf16 is needed."]),
    (["Why does a micro-batch of one still run out of memory?",
      "What can I do when even batch size one does not fit?"],
     ["At that point the fixed costs and a single long sequence are too much. Turn on gradient checkpointing if "
      "it is off, shorten the sequence length, use 8-bit paged optimizer states, and check the logits: a large "
      "vocabulary at a long length can be the biggest single tensor.",
      "Check what is fixed first: the weights in 4 bits, the adapters and their states. Then look at what a "
      "single sequence costs: activations and logits. Checkpointing and a shorter sequence shrink the second "
      "part; a smaller model is the last resort."]),
]

LAYOUTS = [
    "Question: {q}\nAnswer: {a}",
    "### Instruction:\n{q}\n\n### Response:\n{a}",
    "User: {q}\nAssistant: {a}",
    "Q: {q}\nA: {a}",
]

# ---- worked examples ------------------------------------------------------------------------------------------------
MODELS = [  # name, hidden, kv width (kv_heads * head_dim), layers, vocab, parameters (billions, rounded)
    ("Llama-3.2-1B", 2048, 512, 16, 128256, 1.24),
    ("Llama-3.1-8B", 4096, 1024, 32, 128256, 8.03),
    ("Qwen2.5-0.5B", 896, 128, 24, 151936, 0.49),
    ("SmolLM2-360M", 960, 320, 32, 49152, 0.36),
]


def gib(n: float) -> str:
    v = n / 2 ** 30
    return f"{v:.2f} GiB" if v >= 1 else f"{n / 2 ** 20:.0f} MiB"


def effective_batch_notes() -> list[str]:
    out = []
    combos = [(1, 32, 1), (2, 16, 1), (4, 8, 1), (8, 4, 1), (2, 8, 2), (1, 16, 2), (4, 4, 2), (2, 4, 4),
              (1, 8, 4), (16, 2, 1), (2, 2, 8), (1, 64, 1), (4, 16, 1), (8, 8, 2), (3, 5, 1), (6, 4, 1)]
    for n, (m, a, g) in enumerate(combos):
        eff = m * a * g
        gpus = "one GPU" if g == 1 else f"{g} GPUs"
        if n % 2 == 0:
            out.append(f"Question: With a micro-batch of {m}, {a} accumulation steps and {gpus}, what is the "
                       f"effective batch?\nAnswer: Multiply the three: {m} x {a} x {g} = {eff} sequences per "
                       f"optimizer step. Memory is set by the micro-batch of {m} alone.")
        else:
            out.append(f"### Instruction:\nI want an effective batch of {eff} on {gpus} and only a micro-batch of "
                       f"{m} fits. How many accumulation steps do I need?\n\n### Response:\n{eff} / {m} / {g} = "
                       f"{a} accumulation steps. The optimizer then steps once every {a} micro-batches"
                       f"{' on each GPU' if g > 1 else ''}.")
    return out


def weight_notes() -> list[str]:
    out = []
    for billions in (0.5, 1, 3, 7, 8, 13, 70):
        n = billions * 1e9
        fp32, half, q4 = n * 4, n * 2, n * 0.5
        out.append(f"Q: How much memory do the weights of a {billions:g}B-parameter model take?\nA: At 4 bytes "
                   f"each in fp32 about {gib(fp32)}, at 2 bytes in fp16 or bf16 about {gib(half)}, and at half a "
                   f"byte in 4 bits about {gib(q4)}, plus a little for the quantization scales and for layers "
                   f"kept in 16 bits.")
    return out


def adam_notes() -> list[str]:
    out = []
    for millions in (1, 3.4, 6.8, 20, 42, 100, 500, 1000):
        n = millions * 1e6
        out.append(f"User: How much memory do the optimizer states need for {millions:g} million trained "
                   f"parameters?\nAssistant: Standard Adam keeps two fp32 moments, 8 bytes per parameter: "
                   f"{gib(n * 8)}. An 8-bit Adam needs about 2 bytes per parameter: {gib(n * 2)}. The fp32 "
                   f"gradients add another {gib(n * 4)}.")
    return out


def lora_notes() -> list[str]:
    out = []
    for name, h, kv, layers, _vocab, params in MODELS:
        for r in (8, 16, 64):
            per_layer = r * (h + h) * 2 + r * (h + kv) * 2          # q and o: h→h; k and v: h→kv
            total = per_layer * layers
            share = total / (params * 1e9) * 100
            out.append(f"Question: How many trainable parameters does LoRA rank {r} on q, k, v and o add to "
                       f"{name}?\nAnswer: Each layer adds {r} x ({h}+{h}) for q and for o, and {r} x ({h}+{kv}) "
                       f"for k and for v: {per_layer:,} per layer. Over {layers} layers that is {total:,}, about "
                       f"{share:.2f}% of the model.")
    return out


def logits_notes() -> list[str]:
    out = []
    for name, _h, _kv, _layers, vocab, _p in MODELS:
        for b, s in ((1, 2048), (4, 512), (8, 1024)):
            n = b * s * vocab
            out.append(f"Q: How big are the fp32 logits of {name} for a micro-batch of {b} at sequence length "
                       f"{s}?\nA: {b} x {s} x {vocab:,} vocabulary entries = {n:,} values, times 4 bytes = "
                       f"{gib(n * 4)}. The log-softmax and its gradient need buffers of about the same size "
                       f"again.")
    return out


def checkpoint_notes() -> list[str]:
    out = []
    cases = [(1, 2048, 4096, 32), (8, 2048, 4096, 32), (1, 4096, 4096, 32), (2, 1024, 2048, 16),
             (4, 512, 2048, 16), (1, 2048, 896, 24), (2, 2048, 960, 32), (1, 8192, 4096, 32)]
    for b, s, h, L in cases:
        n = b * s * h * L * 2
        out.append(f"### Instruction:\nWith full gradient checkpointing, how much do the stored layer inputs take "
                   f"for batch {b}, sequence {s}, hidden size {h} and {L} layers in 16-bit?\n\n### Response:\n"
                   f"One input per layer: {b} x {s} x {h} x {L} x 2 bytes = {gib(n)}. During backward one "
                   f"layer's full activations are rebuilt on top of that.")
    return out


def build() -> list[str]:
    notes: list[str] = []
    k = 0
    for questions, answers in TOPICS:
        for a in answers:
            for q in questions:
                notes.append(LAYOUTS[k % len(LAYOUTS)].format(q=q, a=a))
                k += 1
    for make in (effective_batch_notes, weight_notes, adam_notes, lora_notes, logits_notes, checkpoint_notes):
        notes.extend(make())
    seen = set()
    unique = []
    for text in notes:
        if text in seen:
            continue
        seen.add(text)
        if not MIN_CHARS <= len(text) <= MAX_CHARS:
            raise SystemExit(f"note of {len(text)} characters is outside {MIN_CHARS}..{MAX_CHARS}: {text[:80]!r}")
        unique.append(text)
    return unique


def main() -> None:
    notes = build()
    with OUT.open("w", encoding="utf-8", newline="\n") as fh:
        for text in notes:
            fh.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    print(f"wrote {len(notes)} notes to {OUT}")


if __name__ == "__main__":
    main()
