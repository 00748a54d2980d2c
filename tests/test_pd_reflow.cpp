// Progressive distillation and rectified-flow reflow (with InstaFlow): rounds and their targets,
// straightening of the mixture's flow, stores as training data, and exact resume.
#include "distill_runs.h"

namespace distillery {
namespace {

// Round r's grids are every 2^(r+1)-th (student) and 2^r-th (teacher) point of one Karras grid
// of 2·N_0 steps, so a teacher's midpoint lies between each student step's ends. With K
// substeps, round 0 starts on the student grid of a later round of K = 1 (N_0·K = 8 here), and
// its original teacher walks that round's finest grid. The target x̃ is what one DDIM step from
// t must denoise to so as to land where the teacher's steps did: checked against the solver
// run alone on each row's path [t, …, s], with Heun and with Euler, for rows at different steps
// at once, with two and with four teacher steps per student step.
TEST(Pd, RoundsHalveTheGridAndTheTargetLandsWhereTheTeachersStepsDo) {
  const ProgressiveRounds rounds(0.002, 80, 7, 8, 1);
  ASSERT_EQ(rounds.count(), 4);
  const auto base = make_sigmas({ScheduleKind::Karras, 0.002, 80, 7}, 16);
  for (int64_t r = 0; r < 4; ++r) {
    const auto student = rounds.student_sigmas(r), teacher = rounds.teacher_sigmas(r);
    ASSERT_EQ(static_cast<int64_t>(student.size()), (8 >> r) + 1);
    ASSERT_EQ(teacher.size(), 2 * student.size() - 1);
    EXPECT_EQ(rounds.student_steps(r), 8 >> r);
    for (size_t i = 0; i < student.size(); ++i) {
      EXPECT_EQ(student[i], base[i << (r + 1)]);
      EXPECT_EQ(teacher[2 * i], student[i]);
    }
    EXPECT_EQ(student.back(), 0.0);
  }
  EXPECT_EQ(rounds.student_sigmas(3), (std::vector<double>{80.0, 0.0}));
  EXPECT_THROW(ProgressiveRounds(0.002, 80, 7, 6, 1), Error);
  EXPECT_THROW(ProgressiveRounds(0.002, 80, 7, 4, 8), Error);
  testing::expect_error_mentioning<Error>([] { ProgressiveRounds(0.002, 80, 7, 4, 1, 0); }, {"pd.original_substeps", "at least one solver step"});

  const ProgressiveRounds substeps(0.002, 80, 7, 4, 1, 2);
  ASSERT_EQ(substeps.count(), 3);
  EXPECT_EQ(substeps.teacher_sigmas(0), base);
  for (int64_t r = 0; r < 3; ++r) {
    EXPECT_EQ(substeps.student_steps(r), rounds.student_steps(r + 1));
    EXPECT_EQ(substeps.student_sigmas(r), rounds.student_sigmas(r + 1));
    if (r > 0) {
      EXPECT_EQ(substeps.teacher_sigmas(r), rounds.teacher_sigmas(r + 1));
    }
  }

  const auto dir = testing::scratch_dir();
  std::ofstream(dir / "three_modes.yaml") << testing::kThreeModes2d;
  const auto teacher = load_teacher("gmm:" + (dir / "three_modes.yaml").string(), c10::Device(c10::DeviceType::CPU));
  for (const auto& [grid, per_step, rows] : {std::tuple{rounds.teacher_sigmas(0), 2, std::vector<int64_t>{0, 3, 5, 7}},
                                              std::tuple{substeps.teacher_sigmas(0), 4, std::vector<int64_t>{0, 1, 2, 3}}}) {
    // rows: student steps, the last ending at σ = 0
    std::vector<std::vector<double>> path(static_cast<size_t>(per_step + 1));
    for (auto i : rows)
      for (size_t k = 0; k < path.size(); ++k) path[k].push_back(grid[static_cast<size_t>(i * per_step) + k]);
    const auto& t = path.front();
    const auto& s = path.back();
    const auto x_t = per_sample_normal(3, noise_stream::initial, {0, 1, 2, 3}, {2}, torch::kFloat64) * per_row(t, torch::zeros({4, 2}, torch::kFloat64));
    for (const char* solver_name : {"heun", "euler"}) {
      const auto solver = make_sampler(solver_name);
      const auto target = pd_target(*teacher, *solver, x_t, path, SampleContext{});
      for (size_t r = 0; r < rows.size(); ++r) {
        const auto row = x_t.narrow(0, static_cast<int64_t>(r), 1);
        std::vector<double> row_path;
        for (const auto& sigmas : path) row_path.push_back(sigmas[r]);
        const auto x_s = solver->run(*teacher, row, row_path, SampleContext{});
        const auto landed = target.narrow(0, static_cast<int64_t>(r), 1) + (s[r] / t[r]) * (row - target.narrow(0, static_cast<int64_t>(r), 1));
        EXPECT_LT((landed - x_s).abs().max().item<double>(), 1e-12 * (1 + x_s.abs().max().item<double>()))
            << solver_name << ", " << per_step << " teacher steps, row " << r;
      }
    }
  }
}

// Four rounds, 8 → 4 → 2 → 1 steps, from a student trained from scratch against the mixture's
// exact teacher (Heun in round 0), and the file of each round generates with its own grid.
// Measured, RMS against the exact flow map in N_r DDIM steps: 0.258, 0.265, 0.269, 0.272 at 8,
// 4, 2 and 1 steps, against the teacher's own N_r Euler steps 0.531, 0.959, 1.060, 2.099. The
// halvings add little to the first round's error (its 400 steps from scratch set it), so every
// round stays under 0.35, and from 4 steps down the student is over 3 times nearer than the
// teacher's Euler steps.
TEST(Pd, StudentOfTheMixtureHalvesItsStepsDownToOneAlongTheExactFlowMap) {
  const auto dir = testing::scratch_dir();
  auto run = pd_mixture_run(dir, "run", "lr: 1.0e-3, start_steps: 8, final_steps: 1, round_steps: 400", 1600, {"model.hidden=256"});
  run_distillation(run.options, run.teacher);
  const auto teacher = load_teacher(run.teacher, c10::Device(c10::DeviceType::CPU));
  const ExactFlowMap flow(*teacher);
  const auto& noise = flow.noise;
  const auto rms = [&](const at::Tensor& x) { return flow.rms(x); };
  const ProgressiveRounds rounds(0.002, 80, 7, 8, 1);
  for (int64_t round = 0; round < 4; ++round) {
    const auto file = run.options.out_dir / (round < 3 ? fmt::format("student-phase-{}.safetensors", round) : "student.safetensors");
    const auto request = student_request(file);
    auto grid = rounds.student_sigmas(round);
    EXPECT_EQ(request.sampler, "euler");
    EXPECT_EQ(request.sigmas, std::vector<double>(grid.begin(), grid.end() - 1)) << file;
    const auto student = NetworkDenoiser::load(file);
    torch::NoGradGuard no_grad;
    const double student_error = rms(make_sampler("euler")->run(*student, (noise * 80.0).to(torch::kFloat32), grid, SampleContext{}));
    const double teacher_error = rms(make_sampler("euler")->run(*teacher, noise * 80.0, grid, SampleContext{}));
    std::printf("RMS error against the exact flow map, %lld step(s): PD student %.4f, teacher (Euler) %.4f\n", static_cast<long long>(8 >> round),
                student_error, teacher_error);
    EXPECT_LT(student_error, 0.35) << (8 >> round) << " steps";
    if (round > 0) {
      EXPECT_LT(student_error, teacher_error / 3) << (8 >> round) << " steps";
    }
  }
}

// One reflow of the mixture's exact flow (its 1-rectified flow, Heun 18 steps into a store):
// the student trained on those (noise, endpoint) pairs has straighter trajectories, and its
// one Euler step from σ_max lands far nearer each noise's own endpoint than the teacher's.
// Measured after 600 steps: S(Z) 1.257 → 0.027 (1,500 steps: 0.008), one-step RMS 2.114 →
// 0.548 (1,500 steps: 0.337); the thresholds are a tenfold straightening and a threefold
// nearer step.
TEST(Reflow, OneReflowStraightensTheMixturesFlowAndInstaFlowDistilsItsOneStep) {
  EXPECT_EQ(reflow_sigmas(80, 1), std::vector<double>{80.0});
  const auto four = reflow_sigmas(80, 4);  // t = 80/81 · (1, 3/4, 1/2, 1/4)
  ASSERT_EQ(four.size(), 4u);
  const double t_max = 80.0 / 81.0;
  for (int k = 1; k < 4; ++k) EXPECT_NEAR(four[static_cast<size_t>(k)], t_max * (1 - k / 4.0) / (1 - t_max * (1 - k / 4.0)), 1e-12);
  EXPECT_EQ(annealed_randomness(0, 200), 1.0);
  EXPECT_EQ(annealed_randomness(50, 200), 0.75);
  EXPECT_EQ(annealed_randomness(200, 200), 0.0);
  EXPECT_EQ(annealed_randomness(500, 200), 0.0);
  EXPECT_EQ(annealed_randomness(7, 0), 0.0);

  const auto dir = testing::scratch_dir();
  std::ofstream(dir / "three_modes.yaml") << testing::kThreeModes2d;
  const std::string teacher_spec = "gmm:" + (dir / "three_modes.yaml").string();
  record_full(teacher_spec, dir / "teacher-store", 4096);
  auto run = reflow_mixture_run(dir, "run", dir / "teacher-store", 600, {"model.hidden=256", "train.lr_schedule=cosine"});
  run_distillation(run.options, run.teacher);
  const auto student_file = run.options.out_dir / "student.safetensors";
  record_full(student_file.string(), dir / "student-store", 2048);
  const auto before = store_straightness(dir / "teacher-store"), after = store_straightness(dir / "student-store");

  TrajectoryReader reader(dir / "teacher-store");
  std::vector<int64_t> rows(2048);
  std::iota(rows.begin(), rows.end(), 0);
  const auto pairs = reader.pairs(rows);
  const auto teacher = load_teacher(teacher_spec, c10::Device(c10::DeviceType::CPU));
  const auto student = NetworkDenoiser::load(student_file);
  // The analytic teacher integrates in float64, the network in float32.
  const auto one_step = [&](Denoiser& model, torch::Dtype dtype) {
    torch::NoGradGuard no_grad;
    return make_sampler("euler")->run(model, pairs.noise.to(dtype) * 80.0, {80.0, 0.0}, SampleContext{});
  };
  const auto rms = [&](const at::Tensor& x) { return (x.to(torch::kFloat64) - pairs.sample.to(torch::kFloat64)).pow(2).sum(1).mean().sqrt().item<double>(); };
  const double student_error = rms(one_step(*student, torch::kFloat32)), teacher_error = rms(one_step(*teacher, torch::kFloat64));
  std::printf("straightness: teacher %.4f ± %.4f, after one reflow %.4f ± %.4f; one Euler step to the coupled endpoint, RMS: teacher %.4f, reflowed %.4f\n",
              before.mean, before.standard_error, after.mean, after.standard_error, teacher_error, student_error);
  EXPECT_LT(after.mean, before.mean / 10);
  EXPECT_LT(student_error, teacher_error / 3);
  // The file offers other step counts on the flow's own clock.
  EXPECT_EQ(student_request(student_file, 4).sigmas, reflow_sigmas(80, 4));

  // SlimFlow's annealing reflow into a student with a quarter of the width (14,914 parameters
  // against 207,106), from scratch, on the same pairs: its one step also lands far nearer the
  // coupled endpoints than the teacher's. Measured: 0.826 RMS against the teacher's 2.114.
  auto slim = reflow_mixture_run(dir, "slim", dir / "teacher-store", 600, {"model.hidden=64", "train.lr_schedule=cosine", "reflow.anneal_steps=200"});
  run_distillation(slim.options, slim.teacher);
  const auto slim_student = NetworkDenoiser::load(slim.options.out_dir / "student.safetensors");
  const auto parameters = [](NetworkDenoiser& model) {
    int64_t count = 0;
    for (const auto& p : model.module().parameters()) count += p.numel();
    return count;
  };
  const double slim_error = rms(one_step(*slim_student, torch::kFloat32));
  std::printf("SlimFlow's annealing reflow, %lld parameters against %lld: one step to the coupled endpoint, RMS %.4f\n",
              static_cast<long long>(parameters(*slim_student)), static_cast<long long>(parameters(*student)), slim_error);
  EXPECT_LT(parameters(*slim_student) * 10, parameters(*student));
  EXPECT_LT(slim_error, teacher_error / 2);

  // InstaFlow's stage: a one-step student of the reflowed flow, trained on that flow's own
  // (noise, endpoint) pairs, lands nearer those endpoints in its one step than the flow does:
  // measured after 300 steps, RMS 0.098 against the reflowed flow's own one step 0.445.
  auto insta = consistency_mixture_run(dir, "instaflow", "instaflow", fmt::format("lr: 1.0e-3, store: \"{}\", distance: l2", (dir / "student-store").string()),
                                       300, {"precond.parameterization=edm", "student.init=teacher", "model.hidden=256"});
  insta.teacher = student_file.string();
  run_distillation(insta.options, insta.teacher);
  TrajectoryReader flow(dir / "student-store");
  const auto flow_pairs = flow.pairs(std::vector<int64_t>(rows.begin(), rows.end()));
  const auto insta_student = NetworkDenoiser::load(insta.options.out_dir / "student.safetensors");
  const auto to_flow_end = [&](Denoiser& model) {
    torch::NoGradGuard no_grad;
    const auto x = make_sampler("euler")->run(model, flow_pairs.noise * 80.0, {80.0, 0.0}, SampleContext{});
    return (x - flow_pairs.sample).pow(2).sum(1).mean().sqrt().item<double>();
  };
  const double reflow_one = to_flow_end(*student), insta_one = to_flow_end(*insta_student);
  std::printf("one step to the reflowed flow's own endpoints, RMS: reflowed %.4f, InstaFlow %.4f\n", reflow_one, insta_one);
  EXPECT_LT(insta_one, reflow_one / 2);
}

// Three rounds of three steps (4 → 2 → 1), stopped at step 4 in the middle of the second: the
// resumed run rebuilds round 1 with its teacher from the checkpoint and ends bit for bit where the
// uninterrupted one does, the round files included.
TEST(Trainer, ProgressiveDistillationResumedMidRoundEqualsUninterruptedBitForBit) {
  const auto dir = testing::scratch_dir();
  const std::vector<std::string> small = {"model.hidden=32", "train.batch=16", "train.ema_halflife_images=50", "eval.every=2", "eval.num=200",
                                          "log.every=1", "checkpoint.every=2"};
  const std::string keys = "lr: 1.0e-3, start_steps: 4, final_steps: 1, round_steps: 3, solver: euler";
  const auto straight = pd_mixture_run(dir, "straight", keys, 8, small), resumed = pd_mixture_run(dir, "resumed", keys, 8, small);
  expect_resume_equals_straight(straight, resumed, 8,
                                {"generator.safetensors", "teacher.safetensors", "generator_optimizer.safetensors", "ema.safetensors", "state.json"},
                                {"step", "phase", "pd_loss", "student_steps", "fd_raw"});
  for (const char* file : {"student-phase-0.safetensors", "student-phase-1.safetensors"})
    EXPECT_EQ(file_bytes(dir / "straight" / file), file_bytes(dir / "resumed" / file)) << file;
  EXPECT_EQ(student_request(dir / "resumed" / "student-phase-1.safetensors").sigmas.size(), 2u);
  // With an EMA, the last round's teacher is the previous round's written result, not its raw weights.
  const auto round_teacher = load_tensor_file(dir / "resumed" / "checkpoints/step-0000008/teacher.safetensors").tensors;
  const auto previous_result = load_tensor_file(dir / "resumed" / "student-phase-1.safetensors").tensors;
  ASSERT_EQ(round_teacher.size(), previous_result.size());
  for (const auto& [name, tensor] : previous_result) EXPECT_TRUE(torch::equal(round_teacher.at(name), tensor)) << name;
}

// Fed by a store of the teacher's samples instead of data.*, progressive distillation reads them
// by the step, so a resume repeats the batches; and they are what it trains on: the first loss
// differs from the data-fed run's.
TEST(Trainer, ProgressiveDistillationFedByAStoreResumesBitForBit) {
  const auto dir = testing::scratch_dir();
  std::ofstream(dir / "three_modes.yaml") << testing::kThreeModes2d;
  record_full("gmm:" + (dir / "three_modes.yaml").string(), dir / "store", 64);
  const std::vector<std::string> small = {"model.hidden=32", "train.batch=16", "eval.every=2", "eval.num=200", "log.every=1", "checkpoint.every=2"};
  const std::string keys = "lr: 1.0e-3, start_steps: 2, final_steps: 1, round_steps: 2, solver: euler";
  const auto store_keys = fmt::format("{}, store: \"{}\"", keys, (dir / "store").string());
  const auto straight = pd_mixture_run(dir, "straight", store_keys, 4, small), resumed = pd_mixture_run(dir, "resumed", store_keys, 4, small);
  expect_resume_equals_straight(straight, resumed, 4, {"generator.safetensors", "teacher.safetensors", "generator_optimizer.safetensors", "state.json"},
                                {"step", "phase", "pd_loss", "fd_raw"});
  auto data_fed = pd_mixture_run(dir, "data", keys, 1, small);
  run_distillation(data_fed.options, data_fed.teacher);
  const auto first_loss = [](const MixtureRun& run) {
    for (const auto& line : stats_lines(run.options.out_dir))
      if (line.contains("pd_loss")) return line.at("pd_loss").get<double>();
    ADD_FAILURE() << "no pd_loss in " << run.options.out_dir;
    return 0.0;
  };
  EXPECT_NE(first_loss(data_fed), first_loss(straight));
}

// A store recorded with --labels none cannot feed a class-conditional student (it would learn
// only its unconditional branch): every method that reads pairs refuses it before training.
TEST(Trainer, AClassConditionalStudentRefusesAStoreWithoutLabels) {
  const auto dir = testing::scratch_dir();
  std::ofstream(dir / "labelled.yaml") << testing::kThreeModes2d << "conditional: true\n";
  const std::string teacher = "gmm:" + (dir / "labelled.yaml").string();
  record_full(teacher, dir / "store", 16, "none");
  const auto store = fmt::format("store: \"{}\"", (dir / "store").string());
  for (const auto& [method, keys] : std::vector<std::pair<std::string, std::string>>{{"reflow", store}, {"instaflow", store}, {"pd", store}}) {
    auto run = consistency_mixture_run(dir, method, method, keys, 2, {"precond.parameterization=edm", "model.num_classes=3"});
    SCOPED_TRACE(method);
    testing::expect_error_mentioning<Error>([&] { run_distillation(run.options, teacher); },
                                            {"a class-conditional student needs a store recorded with labels"});
  }
}

// k-reflow reads its pairs from a store in an order drawn from the step: the resumed half reads
// the same batches.
TEST(Trainer, ReflowStopAndResumeEqualsUninterruptedBitForBit) {
  const auto dir = testing::scratch_dir();
  std::ofstream(dir / "three_modes.yaml") << testing::kThreeModes2d;
  record_full("gmm:" + (dir / "three_modes.yaml").string(), dir / "store", 64);
  // Annealing over the first four steps: the fresh noise mixed into the pairs is drawn again.
  const std::vector<std::string> small = {"model.hidden=32", "train.batch=16", "train.ema_halflife_images=50", "eval.every=3", "eval.num=200",
                                          "log.every=1", "checkpoint.every=3", "reflow.anneal_steps=4"};
  expect_resume_equals_straight(reflow_mixture_run(dir, "straight", dir / "store", 6, small), reflow_mixture_run(dir, "resumed", dir / "store", 6, small), 6,
                                {"generator.safetensors", "generator_optimizer.safetensors", "ema.safetensors", "state.json"},
                                {"step", "reflow_loss", "randomness", "fd_raw"});
}

// InstaFlow reads the pairs of a store recorded from its teacher, by the step, like reflow.
TEST(Trainer, InstaFlowStopAndResumeEqualsUninterruptedBitForBit) {
  const auto dir = testing::scratch_dir();
  std::ofstream(dir / "three_modes.yaml") << testing::kThreeModes2d;
  const std::string teacher = "gmm:" + (dir / "three_modes.yaml").string();
  record_full(teacher, dir / "store", 64);
  const std::vector<std::string> small = {"precond.parameterization=edm", "model.hidden=32", "train.batch=16", "eval.every=3", "eval.num=200",
                                          "log.every=1", "checkpoint.every=3"};
  // With SlimFlow's flow-guided term, whose points on the student's line are drawn by position.
  const auto keys = fmt::format("lr: 1.0e-3, store: \"{}\", distance: pseudo-huber, guidance_weight: 0.5", (dir / "store").string());
  expect_resume_equals_straight(consistency_mixture_run(dir, "straight", "instaflow", keys, 6, small), consistency_mixture_run(dir, "resumed", "instaflow", keys, 6, small),
                                6, {"generator.safetensors", "generator_optimizer.safetensors", "state.json"}, {"step", "instaflow_loss", "guidance_loss", "fd_raw"});
}

}  // namespace
}  // namespace distillery
