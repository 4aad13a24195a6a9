//! One sequence: which camera, which fixture, how the camera moves, where the sun is, where
//! the anomaly and the hard negatives sit; and the world they share (station, camera positions).
use image::{GrayImage, RgbImage};
use nalgebra::{Point3, Rotation3, Unit, Vector3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::noise;
use super::objects::{anomaly, hard_negative, AnomalyClass, Placed};
use super::raycast::{Hit, Ray};
use super::render::{render, Camera, Lighting};
use super::scene::{Earth, Scene};
use super::station::Station;
use super::trajectory::{self, gaussian, look_at, up_hint, ArcDirection, Trajectory, ARC_RADIUS};
use super::{SplitSpec, SynthConfig};
use crate::data::meta::{FramePose, Intrinsics, PlacedObject, SequenceMeta};

// Salts separating the random streams derived from one dataset seed.
const STATION_SALT: u64 = 0x5354_4154;
const CAMERA_SALT: u64 = 0x4341_4d45;
const GLINT_SALT: u64 = 0x474c_494e;

/// Per-frame sun jitter (standard deviation, degrees).
const SUN_JITTER_DEG: f64 = 1.5;
/// Walk cameras start this far from their fixture (metres).
const WALK_START: std::ops::Range<f64> = 6.0..9.0;

/// What a sequence is, before anything is rendered: enough to regenerate it alone.
#[derive(Clone, Debug, PartialEq)]
pub struct SequencePlan {
    pub split: String,
    /// Position within the split.
    pub index: usize,
    pub camera_id: u32,
    pub trajectory: Trajectory,
    pub anomalous: bool,
    /// Seed of this sequence's random stream (derived from the dataset seed, split and index).
    pub seed: u64,
}

impl SequencePlan {
    /// Sequence `i` of a split: odd indices are anomalous (so each split is half and half),
    /// consecutive pairs share a camera, cameras cycle, and test arcs cycle their direction.
    pub fn new(cfg: &SynthConfig, split: &SplitSpec, i: usize) -> Self {
        let k = i / 2;
        let n_cams = split.cameras.len().max(1);
        let camera_id = split.cameras.start + (k % n_cams) as u32;
        let trajectory = if split.name == "test" {
            Trajectory::Arc(ArcDirection::ALL[(k + k / n_cams) % 4])
        } else {
            Trajectory::Walk
        };
        let split_key = split
            .name
            .bytes()
            .fold(0u64, |h, b| noise::mix(h ^ u64::from(b)));
        Self {
            split: split.name.clone(),
            index: i,
            camera_id,
            trajectory,
            anomalous: i % 2 == 1,
            seed: noise::derive(cfg.seed, &[split_key, i as u64]),
        }
    }

    /// Directory name, e.g. `cam07_seq003_anomalous`.
    pub fn sequence_id(&self) -> String {
        let kind = if self.anomalous { "anomalous" } else { "clean" };
        format!("cam{:02}_seq{:03}_{kind}", self.camera_id, self.index)
    }
}

/// The station and the camera geometry shared by every sequence of a dataset.
#[derive(Clone, Debug)]
pub struct World {
    cfg: SynthConfig,
    pub station: Station,
    /// The station alone (no Earth): for placement and line-of-sight checks.
    station_scene: Scene,
    pub intrinsics: Intrinsics,
}

/// A sequence ready to render: its `meta.json`, its scene, and per-frame cameras and lights.
#[derive(Clone, Debug)]
pub struct SequenceScene {
    pub meta: SequenceMeta,
    pub scene: Scene,
    pub cameras: Vec<Camera>,
    pub lights: Vec<Lighting>,
}

impl SequenceScene {
    /// Renders frame `k` (image and exact mask).
    pub fn render_frame(&self, k: usize) -> (RgbImage, GrayImage) {
        render(&self.scene, &self.cameras[k], &self.lights[k])
    }
}

impl World {
    /// Builds the station of `cfg.seed`.
    pub fn new(cfg: &SynthConfig) -> Self {
        let station = Station::build(&mut ChaCha8Rng::seed_from_u64(noise::derive(
            cfg.seed,
            &[STATION_SALT],
        )));
        let station_scene = Scene::new(station.objects.clone(), None);
        let fx = cfg.width as f64 / 2.0 / (cfg.hfov_deg.to_radians() / 2.0).tan();
        Self {
            cfg: cfg.clone(),
            station,
            station_scene,
            intrinsics: Intrinsics {
                fx,
                fy: fx,
                cx: cfg.width as f64 / 2.0,
                cy: cfg.height as f64 / 2.0,
            },
        }
    }

    /// Whether the straight segment from `a` to `b` misses the station.
    fn clear(&self, a: &Point3<f64>, b: &Point3<f64>) -> bool {
        let d = b - a;
        let len = d.norm();
        len < 1e-9
            || !self.station_scene.occluded(
                &Ray {
                    origin: *a,
                    dir: d / len,
                },
                len,
            )
    }

    /// Camera position `id`: its fixture and start point, with a clear view of the fixture
    /// (for test cameras, along all four arcs). Depends only on the dataset seed and `id`.
    pub fn camera_start(&self, id: u32, arcs: bool) -> (usize, Point3<f64>) {
        let mut rng =
            ChaCha8Rng::seed_from_u64(noise::derive(self.cfg.seed, &[CAMERA_SALT, u64::from(id)]));
        let fixtures = &self.station.fixtures;
        let f = id as usize % fixtures.len();
        let fixture = &fixtures[f];
        let tip = fixture.position + fixture.normal.as_ref() * 0.45;
        let n = fixture.normal.into_inner();
        // Arcs sweep 60 degrees, so test cameras start closer to the normal.
        let (spread, min_cos) = if arcs { (0.35, 0.9) } else { (0.9, 0.6) };
        for _ in 0..200 {
            let v = Vector3::new(gaussian(&mut rng), gaussian(&mut rng), gaussian(&mut rng));
            let dir = (n + v * spread).normalize();
            if dir.dot(&n) < min_cos {
                continue;
            }
            let dist = if arcs {
                ARC_RADIUS
            } else {
                rng.random_range(WALK_START)
            };
            let p = fixture.position + dir * dist;
            let ok = if arcs {
                let up = up_hint(&(fixture.position - p));
                ArcDirection::ALL.iter().all(|&d| {
                    trajectory::arc(&fixture.position, &p, &up, d, self.cfg.frames)
                        .iter()
                        .all(|q| self.clear(q, &tip))
                })
            } else {
                self.clear(&p, &tip)
            };
            if ok {
                return (f, p);
            }
        }
        // Straight out along the normal: the fixture faces free space by construction.
        let dist = if arcs { ARC_RADIUS } else { WALK_START.start };
        (f, fixture.position + n * dist)
    }

    /// Lays out sequence `plan`: trajectory, look-at poses, sun, anomaly, hard negatives.
    #[expect(
        clippy::expect_used,
        reason = "placing without exclusions always succeeds; the generator takes no input"
    )]
    pub fn sequence(&self, plan: &SequencePlan) -> SequenceScene {
        let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
        let frames = self.cfg.frames;
        let arcs = matches!(plan.trajectory, Trajectory::Arc(_));
        let (f, start) = self.camera_start(plan.camera_id, arcs);
        let fixture = &self.station.fixtures[f];
        let tip = fixture.position + fixture.normal.as_ref() * 0.45;
        let up = up_hint(&(fixture.position - start));

        let (positions, targets) = match plan.trajectory {
            Trajectory::Arc(direction) => (
                trajectory::arc(&fixture.position, &start, &up, direction, frames),
                vec![fixture.position; frames],
            ),
            Trajectory::Walk => {
                let positions =
                    trajectory::walk(&start, &fixture.position, frames, &mut rng, |a, b| {
                        self.clear(a, b) && self.clear(b, &tip)
                    });
                // The gaze wanders smoothly near the fixture (at most 0.5 m off).
                let mut offset = Vector3::zeros();
                let targets = (0..frames)
                    .map(|_| {
                        let kick = Vector3::new(
                            gaussian(&mut rng),
                            gaussian(&mut rng),
                            gaussian(&mut rng),
                        );
                        offset = offset * 0.7 + kick * 0.12;
                        if offset.norm() > 0.5 {
                            offset *= 0.5 / offset.norm();
                        }
                        fixture.position + offset
                    })
                    .collect();
                (positions, targets)
            }
        };
        let cameras: Vec<Camera> = positions
            .iter()
            .zip(&targets)
            .map(|(p, t)| Camera {
                width: self.cfg.width,
                height: self.cfg.height,
                intrinsics: self.intrinsics.clone(),
                position: *p,
                rotation: look_at(p, t, &up),
            })
            .collect();

        // The sun lights the fixture's side and stays above the Earth's horizon (which sits
        // about 20 degrees below the horizontal at 400 km), so the Earth never shadows the station.
        let n = fixture.normal.into_inner();
        let sun = (0..100)
            .map(|_| {
                Vector3::new(gaussian(&mut rng), gaussian(&mut rng), gaussian(&mut rng)).normalize()
            })
            .find(|s| s.dot(&n) > 0.25 && s.z > -0.25)
            .unwrap_or(n);
        let lights: Vec<Lighting> = (0..frames)
            .map(|k| {
                let axis = Unit::new_normalize(Vector3::new(
                    gaussian(&mut rng),
                    gaussian(&mut rng),
                    gaussian(&mut rng),
                ));
                let jitter = Rotation3::from_axis_angle(
                    &axis,
                    gaussian(&mut rng) * SUN_JITTER_DEG.to_radians(),
                );
                Lighting {
                    sun: Unit::new_normalize(jitter * sun),
                    glint_salt: noise::derive(plan.seed, &[GLINT_SALT, k as u64]),
                }
            })
            .collect();

        let mut objects = self.station.objects.clone();
        let mut avoid = Vec::new();
        let anomaly_meta = plan.anomalous.then(|| {
            let class = AnomalyClass::ALL[rng.random_range(0..AnomalyClass::ALL.len())];
            let placed = self
                .place(&cameras, &fixture.position, &[], &mut rng, |a, n, rng| {
                    anomaly(class, a, n, rng)
                })
                .expect("placement without exclusions always yields an object");
            avoid.push((placed.centre, placed.radius));
            objects.extend(placed.objects.iter().cloned());
            placed_meta(class.name(), &placed)
        });
        let mut hard_negatives = Vec::new();
        if plan.split != "test" && rng.random_bool(0.5) {
            for _ in 0..rng.random_range(1..=2) {
                let mut shape = "";
                let placed = self.place(
                    &cameras,
                    &fixture.position,
                    &avoid,
                    &mut rng,
                    |a, n, rng| {
                        let (name, p) = hard_negative(a, n, rng);
                        shape = name;
                        p
                    },
                );
                if let Some(placed) = placed {
                    avoid.push((placed.centre, placed.radius));
                    objects.extend(placed.objects.iter().cloned());
                    hard_negatives.push(placed_meta(shape, &placed));
                }
            }
        }

        let meta = SequenceMeta {
            sequence_id: plan.sequence_id(),
            split: plan.split.clone(),
            camera_id: plan.camera_id,
            trajectory: plan.trajectory.to_string(),
            width: self.cfg.width,
            height: self.cfg.height,
            intrinsics: self.intrinsics.clone(),
            frames: cameras
                .iter()
                .zip(&lights)
                .enumerate()
                .map(|(k, (c, l))| FramePose {
                    index: k as u32,
                    position: c.position.coords.into(),
                    rotation: std::array::from_fn(|r| {
                        std::array::from_fn(|col| c.rotation[(r, col)])
                    }),
                    sun_direction: l.sun.into_inner().into(),
                })
                .collect(),
            anomaly: anomaly_meta,
            hard_negatives,
            seed: plan.seed,
            fixture: Some(fixture.position.coords.into()),
        };
        let earth = self.cfg.earth.then(Earth::below_station);
        SequenceScene {
            meta,
            scene: Scene::new(objects, earth),
            cameras,
            lights,
        }
    }

    /// Places an object built by `build(anchor, normal, rng)` where the middle frame sees the
    /// station (or floating between camera and fixture when it sees space), keeping it at least
    /// 0.3 m clear of `avoid` spheres, and preferring spots every frame sees. Returns the best
    /// of a few tries, or `None` when every try collided with `avoid`.
    fn place(
        &self,
        cameras: &[Camera],
        fixture: &Point3<f64>,
        avoid: &[(Point3<f64>, f64)],
        rng: &mut ChaCha8Rng,
        mut build: impl FnMut(&Point3<f64>, &Unit<Vector3<f64>>, &mut ChaCha8Rng) -> Placed,
    ) -> Option<Placed> {
        let mid = &cameras[cameras.len() / 2];
        let (w, h) = (mid.width as f64, mid.height as f64);
        let want = (cameras.len() * 9).div_ceil(10);
        let mut best: Option<(usize, Placed)> = None;
        for _ in 0..40 {
            let ray = mid.ray(
                rng.random_range(0.25..0.75) * w,
                rng.random_range(0.25..0.75) * h,
            );
            let (anchor, normal, on_surface) = match self.station_scene.intersect(&ray) {
                Some(Hit::Object { t, normal, .. }) if t < 25.0 => {
                    let n = if normal.dot(&ray.dir) > 0.0 {
                        -normal
                    } else {
                        normal
                    };
                    (ray.origin + ray.dir * t, n, true)
                }
                _ => {
                    let d = (fixture - ray.origin).norm() * rng.random_range(0.5..0.85);
                    (ray.origin + ray.dir * d, -ray.dir, false)
                }
            };
            let mut placed = build(&anchor, &Unit::new_normalize(normal), rng);
            if self.cfg.object_scale != 1.0 {
                // On the hull, grow away from it; floating, grow in place (growing about the
                // anchor would push the object onto the camera).
                let pivot = if on_surface { anchor } else { placed.centre };
                placed = placed.scaled_about(&pivot, self.cfg.object_scale);
            }
            if avoid
                .iter()
                .any(|(c, r)| (placed.centre - c).norm() < r + placed.radius + 0.3)
            {
                continue;
            }
            let seen = cameras
                .iter()
                .filter(|c| self.sees(c, &placed.centre))
                .count();
            if seen >= want {
                return Some(placed);
            }
            if best.as_ref().is_none_or(|b| seen > b.0) {
                best = Some((seen, placed));
            }
        }
        best.map(|b| b.1)
    }

    /// Whether `p` projects well inside the image of `cam` with nothing of the station between.
    fn sees(&self, cam: &Camera, p: &Point3<f64>) -> bool {
        let Some((u, v, _)) = cam.project(p) else {
            return false;
        };
        let (mx, my) = (cam.width as f64 * 0.05, cam.height as f64 * 0.05);
        u > mx
            && u < cam.width as f64 - mx
            && v > my
            && v < cam.height as f64 - my
            && self.clear(&cam.position, p)
    }
}

fn placed_meta(class: &str, placed: &Placed) -> PlacedObject {
    PlacedObject {
        class: class.to_string(),
        position: placed.centre.coords.into(),
        radius: placed.radius,
    }
}
