// Several students: MSD's routing by label (one file, `generate`), K = 1 as DMD2, smaller
// students, and DisBack's degradation path walked back to the teacher.
#include "distill/common/distances.h"
#include "distill/common/store_pairs.h"
#include "distill_runs.h"

namespace distillery {
namespace {

TEST(RoutedDenoiser, EachRowGoesToTheNetworkOfItsLabelAndTheFileRoundTrips) {
  const auto dir = testing::scratch_dir();
  std::vector<std::unique_ptr<NetworkDenoiser>> networks;
  for (int seed : {1, 2}) {
    torch::manual_seed(seed);
    networks.push_back(std::make_unique<NetworkDenoiser>(MLPConfig{.shape = {2}, .hidden = 16, .layers = 2, .num_classes = 3}));
    networks.back()->module().eval();
  }
  const std::vector<const NetworkDenoiser*> parts = {networks[0].get(), networks[1].get()};
  RoutedDenoiser::save(dir / "routed.safetensors", parts, {1, 0, 1}, {{"student_sampler", "multistep"}, {"student_sigmas", "[80.0]"}});
  auto loaded = load_denoiser_file(dir / "routed.safetensors");
  auto* routed = dynamic_cast<RoutedDenoiser*>(loaded.get());
  ASSERT_NE(routed, nullptr);
  EXPECT_EQ(routed->route(), (std::vector<int64_t>{1, 0, 1}));
  torch::manual_seed(3);
  const auto x = torch::randn({7, 2}) * 3, sigma = torch::rand({7}) * 5 + 0.1;
  const auto labels = torch::tensor(std::vector<int64_t>{0, 1, 2, 2, 1, 0, 0});
  torch::NoGradGuard no_grad;
  const auto out = routed->denoise(x, sigma, labels);
  for (int64_t r = 0; r < 7; ++r) {
    const auto owner = labels[r].item<int64_t>() == 1 ? 0 : 1;
    const auto row = [&](NetworkDenoiser& network) { return network.denoise(x.slice(0, r, r + 1), sigma.slice(0, r, r + 1), labels.slice(0, r, r + 1)); };
    EXPECT_TRUE(torch::allclose(out.slice(0, r, r + 1), row(*networks[static_cast<size_t>(owner)]), 1e-6, 1e-7)) << "row " << r;
    EXPECT_FALSE(torch::allclose(out.slice(0, r, r + 1), row(*networks[static_cast<size_t>(1 - owner)]), 1e-3, 1e-4)) << "row " << r;
  }
  testing::expect_error_mentioning<Error>([&] { routed->denoise(x, sigma, {}); }, {"needs one class label per row"});
  testing::expect_error_mentioning<Error>([&] { routed->denoise(x, sigma, torch::full({7}, 3, torch::kInt64)); },
                                          {"a label the router has no network for"});
  testing::expect_error_mentioning<Error>(
      [&] { RoutedDenoiser::save(dir / "bad.safetensors", parts, {0, 0, 0}), load_denoiser_file(dir / "bad.safetensors"); },
      {"network 1 of the router has no class"});
  testing::expect_error_mentioning<Error>(
      [&] { RoutedDenoiser::save(dir / "bad.safetensors", parts, {0, 1, 5}), load_denoiser_file(dir / "bad.safetensors"); },
      {"the router sends a class to a network it does not hold"});
}

// One student owning every class is DMD2 itself: the same noise, labels, critic and updates.
TEST(Msd, OneStudentIsDmd2BitForBit) {
  const auto dir = testing::scratch_dir();
  const auto plain = conditional_mixture_run(dir, "dmd2", "dmd2", 6), single = conditional_mixture_run(dir, "msd", "msd", 6, {"msd.students=1"});
  run_distillation(plain.options, plain.teacher);
  run_distillation(single.options, single.teacher);
  const auto a = load_tensor_file(plain.options.out_dir / "student.safetensors"), b = load_tensor_file(single.options.out_dir / "student.safetensors");
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& [name, tensor] : a.tensors) EXPECT_TRUE(torch::equal(tensor, b.get("student.0." + name))) << name;
  EXPECT_EQ(b.metadata.at("student_sigmas"), a.metadata.at("student_sigmas"));
  const auto x = stats_lines(plain.options.out_dir), y = stats_lines(single.options.out_dir);
  ASSERT_EQ(x.size(), y.size());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(x[i].at("dm_loss"), y[i].at("dm_loss")) << "line " << i;
}

// Three students, one class each in the order msd.assignment gives: each phase's result is the
// file's network of that student, and `generate` draws every label from its own student.
TEST(Msd, EachLabelIsDrawnByItsOwnStudentThroughGenerate) {
  const auto dir = testing::scratch_dir();
  const auto run = conditional_mixture_run(dir, "run", "msd", 6, {"msd.students=3", "msd.assignment=[2, 0, 1]"});
  run_distillation(run.options, run.teacher);
  const auto file = run.options.out_dir / "student.safetensors";
  auto loaded = load_denoiser_file(file);
  auto& routed = dynamic_cast<RoutedDenoiser&>(*loaded);
  ASSERT_EQ(routed.size(), 3u);
  for (int64_t k = 0; k < 2; ++k) {
    const auto phase = load_tensor_file(run.options.out_dir / fmt::format("student-phase-{}.safetensors", k));
    for (const auto& [name, tensor] : module_tensors(routed.network(static_cast<size_t>(k)).module()))
      EXPECT_TRUE(torch::equal(tensor, phase.get(name))) << "student " << k << " " << name;
    // Each student's own file draws its class by default; the routed file draws them all.
    EXPECT_EQ(phase.metadata.at("student_labels"), k == 0 ? "1" : "2");
  }
  EXPECT_FALSE(load_tensor_file(file).metadata.count("student_labels"));
  const auto own = testing::run_command(fmt::format("{} generate --model {} --num 4 --out {}", testing::kCli,
                                                    (run.options.out_dir / "student-phase-0.safetensors").string(), (dir / "own.safetensors").string()));
  ASSERT_EQ(own.exit_code, 0) << own.output;
  EXPECT_TRUE(load_tensor_file(dir / "own.safetensors").get("labels").eq(1).all().item<bool>());
  const auto result = testing::run_command(fmt::format("{} generate --model {} --num 9 --seed 4 --out {}", testing::kCli, run.options.out_dir.string(),
                                                       (dir / "samples.safetensors").string()));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto samples = load_tensor_file(dir / "samples.safetensors");
  const auto& labels = samples.get("labels");
  for (int64_t i = 0; i < 9; ++i) {
    torch::NoGradGuard no_grad;
    const auto label = labels[i].item<int64_t>();
    EXPECT_EQ(label, i % 3);
    auto& own = routed.network(static_cast<size_t>(std::vector<int64_t>{2, 0, 1}[static_cast<size_t>(label)]));
    const auto expected = own.denoise(samples.get("noise").slice(0, i, i + 1) * 80.0, torch::full({1}, 80.0), labels.slice(0, i, i + 1));
    EXPECT_TRUE(torch::allclose(samples.get("samples").slice(0, i, i + 1), expected, 1e-5, 1e-6)) << "sample " << i;
  }
  // Students keep to their classes; a method that cannot is refused a subset.
  const auto refused = [&](const std::string& method, std::vector<std::string> overrides, const std::string& text) {
    auto bad = conditional_mixture_run(dir, "bad-" + method, method, 2, std::move(overrides));
    SCOPED_TRACE(method);
    testing::expect_error_mentioning<Error>([&] { run_distillation(bad.options, bad.teacher); }, {text});
  };
  refused("msd", {"student.classes=[0]"}, "multi-student distillation splits the classes itself");
  refused("msd", {"msd.students=4"}, "more students than classes");
  refused("msd", {"msd.assignment=[0, 0, 0]"}, "must give every student at least one class");
  refused("dmd2", {"student.classes=[3]"}, "student.classes must be distinct classes of the teacher");
  refused("msd", {"adversarial.r1_weight=1"}, "config key 'adversarial.r1_weight' does not apply to the students' method");
  refused("msd", {"train.warmup_steps=2"}, "the learning-rate schedule spans train.steps");
  // Scoped to the phases, each student gets the whole schedule.
  auto scoped = conditional_mixture_run(dir, "scoped", "msd", 6, {"train.lr_schedule=linear", "train.lr_schedule_scope=phase", "log.every=1"});
  run_distillation(scoped.options, scoped.teacher);
  const auto lines = stats_lines(scoped.options.out_dir);
  ASSERT_EQ(lines.size(), 6u);
  const std::vector<double> per_student = {1.0, 2.0 / 3, 1.0 / 3, 1.0, 2.0 / 3, 1.0 / 3};
  for (size_t i = 0; i < lines.size(); ++i) EXPECT_NEAR(lines[i].at("lr_factor").get<double>(), per_student[i], 1e-12) << "step " << i;
  // A resumed run keeps the split its checkpoints were made with.
  auto other = run;
  other.options.resume = true;
  other.options.overrides = {"msd.students=3", "msd.assignment=[0, 1, 2]"};
  testing::expect_error_mentioning<Error>([&] { run_distillation(other.options, other.teacher); },
                                          {"a multi-student run keeps its students' split when it resumes"});
}

// ADD as the students' method: each phase runs ADD's step (heads on the classifier, score
// distillation, the regression onto the teacher's pairs) on real images of its own class, and
// the file routes to both.
TEST(Msd, StudentsCanBeDistilledByAdd) {
  const auto dir = testing::scratch_dir();
  RecordOptions store;
  store.teacher = "gmm:" + two_class_images(dir, 28).string();
  store.out = dir / "store";
  store.request.num = 16;
  store.request.steps = 2;
  store.request.labels = "all";
  store.show_progress = false;
  record_trajectories(store);
  const auto run = add_image_run(dir, "run", 4, {"method=msd", "msd.method=add", "msd.students=2", "add.regression_weight=0.5",
                                                 "add.regression_store=" + store.out.string()});
  run_distillation(run.options, run.teacher);
  const auto lines = stats_lines(run.options.out_dir);
  ASSERT_EQ(lines.size(), 4u);
  for (const auto& line : lines)
    EXPECT_TRUE(line.contains("generator_adversarial_loss") && line.contains("score_distillation_loss") && line.contains("regression_loss")) << line.dump();
  auto loaded = load_denoiser_file(run.options.out_dir / "student.safetensors");
  auto& routed = dynamic_cast<RoutedDenoiser&>(*loaded);
  EXPECT_EQ(routed.route(), (std::vector<int64_t>{0, 1}));
  const auto phase = load_tensor_file(run.options.out_dir / "student-phase-0.safetensors");
  for (const auto& [name, tensor] : module_tensors(routed.network(0).module())) EXPECT_TRUE(torch::equal(tensor, phase.get(name))) << name;
  EXPECT_EQ(phase.metadata.at("student_sigmas"), "[80.0]");
}

// A student of some classes (an MSD student) regresses onto the teacher's pairs of those classes
// only, each once an epoch, and the regression's target is the store's endpoint of the same
// noise: the teacher as its own student is on target where the store took one Euler step (the
// endpoint is then D(σ₀·z)), and off it where the store took two.
TEST(Msd, AStudentOfSomeClassesRegressesOntoThePairsOfThoseClassesOnly) {
  const auto dir = testing::scratch_dir();
  const auto teacher_spec = "gmm:" + two_class_images(dir, 8).string();
  const auto teacher = load_teacher(teacher_spec, torch::kCPU);
  std::map<int, double> regression;
  for (const int steps : {1, 2}) {
    RecordOptions record;
    record.teacher = teacher_spec;
    record.out = dir / fmt::format("store-{}", steps);
    record.request.sampler = "euler";
    record.request.steps = steps;
    record.request.num = 40;
    record.request.labels = "all";
    record.shard_size = 16;
    record.show_progress = false;
    record_trajectories(record);
    const auto config = Config::parse(distillation_schema("add"), "method: add\n", "add.yaml",
                                      {"student.classes=[1]", "add.regression_weight=1", "add.regression_store=" + record.out.string()});
    const auto pairs = open_teacher_store(config, "add.regression_store", teacher_spec, *teacher, "the regression's pairs");
    const auto labels = TrajectoryReader(record.out).labels([] {
      std::vector<int64_t> all(40);
      std::iota(all.begin(), all.end(), 0);
      return all;
    }());
    StepContext context;
    context.batch = 5;
    context.seed = 3;
    std::multiset<int64_t> seen;
    for (context.step = 0; context.step < 4; ++context.step)
      for (const auto index : pairs->batch_indices(context.step, context.batch, context.seed)) seen.insert(index);
    std::multiset<int64_t> of_class;
    for (int64_t index = 0; index < 40; ++index)
      if (labels[index].item<int64_t>() == 1) of_class.insert(index);
    EXPECT_EQ(of_class.size(), 20u);
    EXPECT_EQ(seen, of_class) << "an epoch of the stream is the class's rows, each once";
    context.step = 0;
    EXPECT_TRUE((pairs_for_step(*pairs, context).labels == 1).all().item<bool>());
    torch::NoGradGuard no_grad;
    regression[steps] = one_step_regression(*pairs, *teacher, squared_l2_distance, context, torch::kCPU).max().item<double>();
  }
  // The second Euler step starts at Karras's σ_min = 0.002 and adds about σ_min·z to D(σ₀·z):
  // a squared distance near σ_min² = 4e-6, against rounding for the one-step store.
  EXPECT_LT(regression[1], 1e-10);
  EXPECT_GT(regression[2], 1e-6);

  const auto config = Config::parse(distillation_schema("add"), "method: add\n", "add.yaml",
                                    {"student.classes=[1]", "add.regression_weight=1", "add.regression_store=" + (dir / "store-1").string()});
  testing::expect_error_mentioning<Error>(
      [&] {
        auto pairs = open_teacher_store(config, "add.regression_store", teacher_spec, *teacher, "the regression's pairs");
        pairs->keep_classes({5});
      },
      {"the store holds no trajectory of the student's classes", "labels among [5]"});
  testing::expect_error_mentioning<Error>([&] { open_regression_store(config, "add", teacher_spec, *teacher, 40.0); },
                                          {"the regression store starts at another σ than the student", "store-1"});
}

// The regression's pairs may come from another model than the teacher (a distilled student with
// sharper samples), named by regression_source: a store of that model is refused without it and
// read with it, its endpoints the targets (that model as its own student is on target).
TEST(Msd, ARegressionStoreOfAnotherModelIsReadWhenItsSourceIsNamed) {
  const auto dir = testing::scratch_dir();
  const auto teacher_spec = "gmm:" + two_class_images(dir, 8).string();
  const auto source_file = dir / "sharper.yaml";
  {
    std::ifstream in(teacher_spec.substr(4));
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("stds: [0.1, 0.1]"), 16, "stds: [0.05, 0.05]");
    std::ofstream(source_file) << text;
  }
  const auto source_spec = "gmm:" + source_file.string();
  RecordOptions record;
  record.teacher = source_spec;
  record.out = dir / "sharper-store";
  record.request.sampler = "euler";
  record.request.steps = 1;
  record.request.num = 16;
  record.request.labels = "all";
  record.show_progress = false;
  record_trajectories(record);
  const auto source = load_teacher(source_spec, torch::kCPU);
  const std::vector<std::string> overrides = {"add.regression_weight=1", "add.regression_store=" + record.out.string()};
  const auto parse = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), overrides.begin(), overrides.end());
    return Config::parse(distillation_schema("add"), "method: add\n", "add.yaml", extra);
  };
  testing::expect_error_mentioning<Error>([&] { open_regression_store(parse({}), "add", teacher_spec, *source, source->sigma_max()); },
                                          {"the trajectory store was recorded from another teacher", "sharper-store"});
  const auto pairs = open_regression_store(parse({"add.regression_source=" + source_spec}), "add", teacher_spec, *source, source->sigma_max());
  StepContext context;
  context.batch = 8;
  torch::NoGradGuard no_grad;
  EXPECT_LT(one_step_regression(*pairs, *source, squared_l2_distance, context, torch::kCPU).max().item<double>(), 1e-10);
}

// Smaller students (half the channels of a tiny UNet teacher) score-matched, then distilled
// with DMD2 and its GAN head, resumed from the checkpoint at the boundary between the two
// students as if killed just after it (train.steps fixes the split, so the run is not
// stopped early as expect_resume_equals_straight does).
TEST(Trainer, MultiStudentDistillationWithSmallerStudentsResumesBitForBit) {
  const auto dir = testing::scratch_dir();
  const auto spec = two_class_images(dir, 8);
  torch::manual_seed(4);
  ConfigSchema network_schema;
  add_network_fields(network_schema);
  NetworkDenoiser::from_config(Config::parse(network_schema, tiny_image_unet(8), "teacher"))->save(dir / "teacher.safetensors");
  const auto run = [&](const std::string& name, bool resume) {
    const auto recipe = dir / "msd.yaml";
    std::ofstream(recipe) << fmt::format(R"(
method: msd
msd: {{students: 2, model_channels: 4, score_matching_steps: 2}}
dmd2: {{generator_lr: 1.0e-3, critic_lr: 1.0e-3, critic_steps: 1, gan_generator_weight: 0.1, gan_critic_weight: 1.0}}
data: {{dataset: gmm, path: "{}", size: 64}}
train: {{batch: 8, steps: 8, ema_halflife_images: 40}}
eval: {{every: 0, num: 8}}
grid: {{every: 0, num: 4}}
log: {{every: 1}}
checkpoint: {{every: 2, keep: 10}}
)",
                                         spec.string());
    auto options = run_in(dir, name, spec, recipe, {}).options;
    options.resume = resume;
    run_distillation(options, (dir / "teacher.safetensors").string());
  };
  run("straight", false);
  run("resumed", false);
  const auto resumed = dir / "resumed";
  for (const char* gone : {"checkpoints/step-0000006", "checkpoints/step-0000008", "student.safetensors", "student-phase-1.safetensors", "student-phase-2.safetensors"})
    std::filesystem::remove_all(resumed / gone);
  const auto before = stats_lines(resumed);
  run("resumed", true);
  // It resumed at step 4: the log's first four lines are the ones written before.
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(stats_lines(resumed)[i].at("timestamp"), before[i].at("timestamp")) << i;
  // And from step 6, where the second student's distillation starts from its score matching.
  for (const char* gone : {"checkpoints/step-0000008", "student.safetensors"}) std::filesystem::remove_all(resumed / gone);
  run("resumed", true);
  for (const char* file : {"generator.safetensors", "critic.safetensors", "gan_heads.safetensors", "student_0.safetensors", "ema.safetensors",
                           "generator_optimizer.safetensors", "critic_optimizer.safetensors", "state.json"})
    EXPECT_EQ(file_bytes(dir / "straight/checkpoints/step-0000008" / file), file_bytes(resumed / "checkpoints/step-0000008" / file)) << file;
  for (const char* file : {"student.safetensors", "student-phase-1.safetensors", "student-phase-2.safetensors"})
    EXPECT_EQ(file_bytes(dir / "straight" / file), file_bytes(resumed / file)) << file;
  const auto lines = stats_lines(dir / "straight"), again = stats_lines(resumed);
  ASSERT_EQ(lines.size(), 8u);
  ASSERT_EQ(again.size(), 8u);
  for (size_t i = 0; i < 8; ++i)
    for (const char* key : {"score_matching_loss", "dm_loss", "gan_critic_loss"}) EXPECT_EQ(lines[i].value(key, nlohmann::json()), again[i].value(key, nlohmann::json())) << key << " " << i;
  // Steps 0-1 and 4-5 score-match, 2-3 and 6-7 distil.
  for (size_t i : {0u, 1u, 4u, 5u}) EXPECT_TRUE(lines[i].contains("score_matching_loss") && !lines[i].contains("dm_loss")) << i;
  for (size_t i : {2u, 3u, 6u, 7u}) EXPECT_TRUE(lines[i].contains("dm_loss")) << i;
  // Half the teacher's 8 base channels: each student's first convolution has 4 outputs.
  const auto file = load_tensor_file(dir / "straight" / "student.safetensors");
  for (const std::string prefix : {"student.0.", "student.1."}) {
    const auto found = std::find_if(file.tensors.begin(), file.tensors.end(), [&](const auto& entry) { return entry.first.starts_with(prefix) && entry.second.dim() == 4; });
    ASSERT_NE(found, file.tensors.end());
    EXPECT_EQ(found->second.size(0), 4) << found->first;
  }
}

// DisBack's schedule in closed form: N − 1 critic checkpoints evenly spaced in the degradation
// (the N-th is the critic as it ends), then each intermediate checkpoint as the real score for
// target_steps steps, from s_{N−1} down, the teacher (0) last.
TEST(Disback, PathCheckpointsAndTargetsFollowTheSchedule) {
  const auto taken = [](const DisbackPath& path) {
    std::vector<std::pair<int64_t, int64_t>> steps;
    for (int64_t step = 0; path.phase_of(step) == 0; ++step)
      if (const auto k = path.checkpoint_taken_before(step)) steps.emplace_back(step, k);
    return steps;
  };
  const DisbackPath path(150, 3, 75);
  EXPECT_EQ(taken(path), (std::vector<std::pair<int64_t, int64_t>>{{50, 1}, {100, 2}}));
  EXPECT_EQ(path.phase_of(149), 0);
  EXPECT_EQ(path.phase_of(150), 1);
  for (const auto& [step, target] : std::vector<std::pair<int64_t, int64_t>>{{150, 2}, {224, 2}, {225, 1}, {299, 1}, {300, 0}, {100000, 0}})
    EXPECT_EQ(path.target_at(step), target) << step;
  EXPECT_EQ(path.teacher_from(), 300);
  const DisbackPath every_step(4, 4, 1);
  EXPECT_EQ(taken(every_step), (std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {2, 2}, {3, 3}}));
  for (int64_t step = 4; step < 8; ++step) EXPECT_EQ(every_step.target_at(step), 7 - step) << step;
  const DisbackPath critic_only(10, 1, 5);
  EXPECT_TRUE(taken(critic_only).empty());
  EXPECT_EQ(critic_only.target_at(10), 0);
}

// The degradation path leads from the teacher to the initial generator: each checkpoint
// denoises the initial generator's samples better than the one before it (EDM's weighted loss
// at fixed σ and noise). Walked back, it trains a one-step student that spreads the collapsed
// one-step samples over the modes.
TEST(Disback, ThePathLeadsFromTheTeacherToTheInitialGeneratorAndItsStudentLearnsTheMixture) {
  const auto dir = testing::scratch_dir();
  const auto teacher_dir = mixture_network_teacher(dir, 800);
  const int64_t degradation = 60;
  const auto run = disback_mixture_run(dir, "run", teacher_dir, 400, degradation, 3, 40);
  run_distillation(run.options, run.teacher);
  const auto out = run.options.out_dir;
  const auto at_end = out / fmt::format("checkpoints/step-{:07d}", degradation);

  torch::NoGradGuard no_grad;
  auto request = student_request(out / "student-phase-0.safetensors");
  request.num = 4000;
  request.seed = 11;
  const auto initial = draw_samples(*NetworkDenoiser::load(out / "student-phase-0.safetensors"), request).samples;
  torch::manual_seed(3);
  const auto sigma = torch::exp(-1.2 + 1.2 * torch::randn({initial.size(0)}, initial.options()));
  const auto noise = torch::randn_like(initial);
  std::vector<double> losses;
  losses.push_back(edm_loss(*load_teacher(teacher_dir, torch::kCPU), initial, sigma, noise, {}, 1.5).item<double>());
  for (const auto* file : {"path_1.safetensors", "path_2.safetensors", "critic.safetensors"}) {
    const auto checkpoint = NetworkDenoiser::load(at_end / file);
    losses.push_back(edm_loss(*checkpoint, initial, sigma, noise, {}, checkpoint->sigma_data()).item<double>());
  }
  std::printf("denoising loss on the initial generator's samples: teacher %.4f, s_1 %.4f, s_2 %.4f, s_3 %.4f\n", losses[0], losses[1], losses[2], losses[3]);
  for (size_t k = 1; k < losses.size(); ++k) EXPECT_LT(losses[k], losses[k - 1]) << "s_" << k;

  const auto [teacher_sw, student_sw] = one_step_sliced_wasserstein(teacher_dir, out / "student.safetensors");
  std::printf("sliced W2 to the mixture: teacher 1 step %.4f, DisBack student 1 step %.4f\n", teacher_sw, student_sw);
  EXPECT_LT(student_sw, teacher_sw / 2);
}

// The generator, the critic, the path's checkpoints and both optimisers carry across a stop in
// the middle of the walk back; a stop in the degradation too.
TEST(Trainer, DisbackStopAndResumeEqualsUninterruptedBitForBit) {
  const auto dir = testing::scratch_dir();
  const auto teacher = untrained_mixture_teacher(dir);
  const std::vector<std::string> small = {"train.batch=16", "eval.every=3", "eval.num=200", "log.every=1", "checkpoint.every=3"};
  const std::vector<std::string> files = {"generator.safetensors", "critic.safetensors", "path_1.safetensors", "generator_optimizer.safetensors",
                                          "critic_optimizer.safetensors", "state.json"};
  // Stopped at step 3: the degradation (steps 0-1, s_1 taken before step 1) is over, s_1 is the target (steps 2-3).
  expect_resume_equals_straight(disback_mixture_run(dir, "straight", teacher, 6, 2, 2, 2, small), disback_mixture_run(dir, "resumed", teacher, 6, 2, 2, 2, small),
                                6, files, {"step", "critic_loss", "dm_loss", "path_target", "fd_raw"});
  // Stopped at step 3 of a 4-step degradation, between its checkpoints s_1 (before step 2) and s_2 (critic).
  expect_resume_equals_straight(disback_mixture_run(dir, "straight-2", teacher, 6, 4, 2, 1, small),
                                disback_mixture_run(dir, "resumed-2", teacher, 6, 4, 2, 1, small), 6, files, {"step", "critic_loss", "dm_loss", "fd_raw"});
  const auto lines = stats_lines(dir / "straight");
  std::vector<int64_t> targets;
  for (const auto& line : lines)
    if (line.contains("path_target")) targets.push_back(line.at("path_target").get<int64_t>());
  EXPECT_EQ(targets, (std::vector<int64_t>{1, 1, 0, 0}));
}

TEST(Disback, RecipeProblemsAreNamed) {
  const auto dir = testing::scratch_dir();
  const auto teacher = untrained_mixture_teacher(dir);
  const std::vector<std::tuple<std::vector<std::string>, std::string, std::string>> cases = {
      {{"student.init=scratch", "model.kind=mlp", "model.shape=[2]"}, "student.init", "starts at the teacher"},
      {{"disback.path_checkpoints=5"}, "disback.path_checkpoints", "a step of its own"},
  };
  for (const auto& [overrides, key, message] : cases) {
    auto run = disback_mixture_run(dir, "refused", teacher, 6, 4, 2, 1, overrides);
    SCOPED_TRACE(fmt::format("{}", fmt::join(overrides, " ")));
    testing::expect_error_mentioning<Error>([&] { run_distillation(run.options, run.teacher); }, {key, message});
    std::filesystem::remove_all(dir / "refused");
  }
}

}  // namespace
}  // namespace distillery
