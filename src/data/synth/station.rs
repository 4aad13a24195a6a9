//! The procedural station: a chain of pressurised modules and nodes along world x, branch
//! modules along y, a truss above them along y carrying radiators and solar arrays, antennas
//! and equipment boxes, and grapple fixtures on the module hulls (the trajectories' targets).
//!
//! World frame: metres, station centred at the origin, z up (away from the Earth).
use std::f64::consts::PI;

use nalgebra::{IsometryMatrix3, Point3, Rotation3, Translation3, Unit, Vector3};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::scene::{ids, Material, Object, Shape, Texture};

/// A grapple fixture: where it sits on the hull and which way it faces.
#[derive(Clone, Debug)]
pub struct Fixture {
    /// Centre of the base plate.
    pub position: Point3<f64>,
    /// Outward hull normal at the fixture.
    pub normal: Unit<Vector3<f64>>,
}

/// The station's objects and its grapple fixtures.
#[derive(Clone, Debug)]
pub struct Station {
    pub objects: Vec<Object>,
    pub fixtures: Vec<Fixture>,
}

/// A rotation taking local z onto `axis` (any twist about it; deterministic).
pub fn z_onto(axis: &Vector3<f64>) -> Rotation3<f64> {
    Rotation3::rotation_between(&Vector3::z(), axis)
        .unwrap_or_else(|| Rotation3::from_axis_angle(&Vector3::x_axis(), PI))
}

fn place(
    shape: Shape,
    at: Point3<f64>,
    rot: Rotation3<f64>,
    material: Material,
    label: u8,
) -> Object {
    Object {
        shape,
        pose: IsometryMatrix3::from_parts(Translation3::from(at.coords), rot),
        material,
        label,
    }
}

/// A straight pressurised hull segment from `a` to `b`.
fn hull(a: Point3<f64>, b: Point3<f64>, radius: f64, material: Material, label: u8) -> Object {
    let axis = b - a;
    place(
        Shape::Cylinder {
            radius,
            half_length: axis.norm() / 2.0,
        },
        nalgebra::center(&a, &b),
        z_onto(&axis),
        material,
        label,
    )
}

/// A module along `axis` (unit) from `start`, of `length` and `radius`.
struct Module {
    start: Point3<f64>,
    axis: Vector3<f64>,
    length: f64,
    radius: f64,
}

impl Station {
    /// Builds the station from `rng` (the dataset seed fixes it for every split).
    pub fn build(rng: &mut ChaCha8Rng) -> Self {
        let module_mat = Material::new([0.82, 0.80, 0.74], Texture::Mli)
            .shiny(0.25, 18.0)
            .glinting(0.35);
        let node_mat = Material::new([0.70, 0.70, 0.68], Texture::Mli).shiny(0.2, 24.0);
        let truss_mat = Material::new([0.62, 0.62, 0.64], Texture::Lattice).shiny(0.3, 40.0);
        let radiator_mat = Material::new([0.92, 0.92, 0.90], Texture::Radiator).shiny(0.35, 60.0);
        let solar_mat = Material::new([0.06, 0.09, 0.28], Texture::SolarCells)
            .shiny(0.7, 120.0)
            .glinting(0.2);
        let mast_mat = Material::new([0.55, 0.5, 0.4], Texture::Plain).shiny(0.3, 30.0);
        let equipment_mat = Material::new([0.78, 0.78, 0.80], Texture::Plain).shiny(0.3, 40.0);

        let mut objects = Vec::new();
        let mut modules = Vec::new();

        // Main axis: module, node, module, node, module, centred on x = 0.
        let radius = rng.random_range(1.9..2.2);
        let lengths = [
            rng.random_range(6.0..8.0),
            2.4,
            rng.random_range(7.0..9.0),
            2.4,
            rng.random_range(5.5..7.5),
        ];
        let mut x = -lengths.iter().sum::<f64>() / 2.0;
        let mut nodes = Vec::new();
        for (i, len) in lengths.iter().enumerate() {
            let a = Point3::new(x, 0.0, 0.0);
            let b = Point3::new(x + len, 0.0, 0.0);
            if i % 2 == 0 {
                objects.push(hull(a, b, radius, module_mat, ids::MODULE));
                modules.push(Module {
                    start: a,
                    axis: Vector3::x(),
                    length: *len,
                    radius,
                });
            } else {
                objects.push(hull(a, b, radius + 0.25, node_mat, ids::NODE));
                nodes.push(nalgebra::center(&a, &b));
            }
            x += len;
        }
        // Branch modules off the nodes, one along -y and one along +y.
        for (node, side) in nodes.iter().zip([-1.0, 1.0]) {
            let len = rng.random_range(5.0..7.0);
            let axis = Vector3::new(0.0, side, 0.0);
            let start = node + axis * (radius + 0.25);
            objects.push(hull(
                start,
                start + axis * len,
                radius * 0.9,
                module_mat,
                ids::MODULE,
            ));
            modules.push(Module {
                start,
                axis,
                length: len,
                radius: radius * 0.9,
            });
        }

        // Truss above the modules along y, on pylons standing on the nodes.
        let truss_z = radius + 3.2;
        let span = 21.0;
        objects.push(place(
            Shape::Cuboid {
                half: Vector3::new(0.6, span, 0.6),
            },
            Point3::new(0.0, 0.0, truss_z),
            Rotation3::identity(),
            truss_mat,
            ids::TRUSS,
        ));
        for node in &nodes {
            let bottom = radius + 0.2;
            let top = truss_z - 0.6;
            objects.push(place(
                Shape::Cuboid {
                    half: Vector3::new(0.35, 0.35, (top - bottom) / 2.0),
                },
                Point3::new(node.x, 0.0, (top + bottom) / 2.0),
                Rotation3::identity(),
                truss_mat,
                ids::TRUSS,
            ));
        }

        // Solar arrays at both truss ends: two wings (+x, -x), each two blankets around a mast,
        // all turned about x by a sun-tracking angle.
        for end in [-1.0, 1.0] {
            let y = end * (span - 1.5);
            let beta = rng.random_range(-0.9..0.9);
            let tilt = Rotation3::from_axis_angle(&Vector3::x_axis(), beta);
            for side in [-1.0, 1.0] {
                let wing_len = 6.0;
                let cx = side * (0.6 + wing_len);
                let mast_a = Point3::new(side * 0.6, y, truss_z);
                let mast_b = Point3::new(side * (0.6 + 2.0 * wing_len), y, truss_z);
                objects.push(hull(mast_a, mast_b, 0.07, mast_mat, ids::SOLAR_ARRAY));
                for offset in [-1.2, 1.2] {
                    let centre =
                        Point3::new(cx, y, truss_z) + tilt * Vector3::new(0.0, offset, 0.0);
                    objects.push(place(
                        Shape::Cuboid {
                            half: Vector3::new(wing_len - 0.2, 1.0, 0.02),
                        },
                        centre,
                        tilt,
                        solar_mat,
                        ids::SOLAR_ARRAY,
                    ));
                }
            }
        }

        // Radiators standing up from the truss between the arrays.
        for y in [-13.0, -8.5, 8.5, 13.0] {
            let turn = Rotation3::from_axis_angle(&Vector3::z_axis(), rng.random_range(-0.5..0.5));
            objects.push(place(
                Shape::Cuboid {
                    half: Vector3::new(1.8, 0.03, 2.6),
                },
                Point3::new(0.0, y, truss_z + 0.6 + 2.6),
                turn,
                radiator_mat,
                ids::RADIATOR,
            ));
        }

        // Equipment: boxes on the truss and an antenna dish on the last module.
        for y in [-4.0, 3.0, 16.0] {
            objects.push(place(
                Shape::Cuboid {
                    half: Vector3::new(0.5, rng.random_range(0.4..0.8), 0.35),
                },
                Point3::new(0.0, y, truss_z + 0.95),
                Rotation3::identity(),
                equipment_mat,
                ids::EQUIPMENT,
            ));
        }
        let last = &modules[2];
        let mast_base =
            last.start + last.axis * (last.length * 0.6) + Vector3::new(0.0, 0.0, last.radius);
        let mast_top = mast_base + Vector3::new(0.0, 0.0, 1.6);
        objects.push(hull(
            mast_base,
            mast_top,
            0.06,
            equipment_mat,
            ids::EQUIPMENT,
        ));
        let dish_axis = Vector3::new(rng.random_range(-1.0..1.0), -0.6, 0.7).normalize();
        objects.push(place(
            Shape::Cylinder {
                radius: 0.8,
                half_length: 0.04,
            },
            mast_top,
            z_onto(&dish_axis),
            equipment_mat.shiny(0.5, 60.0),
            ids::EQUIPMENT,
        ));

        // Grapple fixtures: two per main module, one per branch module, never on top (truss side).
        let mut fixtures = Vec::new();
        for (m, module) in modules.iter().enumerate() {
            let count = if m < 3 { 2 } else { 1 };
            for k in 0..count {
                let along = module.length
                    * (0.3 + 0.4 * (k as f64 + rng.random_range(0.0..1.0)) / count as f64);
                // Angle around the module axis, away from the truss side (+z).
                let phi = rng.random_range(-0.9 * PI..0.2 * PI);
                let side = module.axis.cross(&Vector3::z()).normalize();
                let normal = Unit::new_normalize(side * phi.cos() + Vector3::z() * phi.sin());
                let position = module.start + module.axis * along + normal.as_ref() * module.radius;
                objects.extend(fixture_objects(&position, &normal, &module.axis));
                fixtures.push(Fixture { position, normal });
            }
        }

        // Two more on the truss sides, so some cameras look at truss, radiators and arrays.
        for (y, side) in [(5.0, 1.0), (-5.5, -1.0)] {
            let normal = Unit::new_normalize(Vector3::new(side, 0.0, 0.0));
            let position = Point3::new(side * 0.6, y, truss_z);
            objects.extend(fixture_objects(&position, &normal, &Vector3::y()));
            fixtures.push(Fixture { position, normal });
        }

        Self { objects, fixtures }
    }
}

/// A grapple fixture: a base plate, a grapple pin and a target plate with a cross, all id 6.
fn fixture_objects(
    at: &Point3<f64>,
    normal: &Unit<Vector3<f64>>,
    along: &Vector3<f64>,
) -> Vec<Object> {
    let n = normal.into_inner();
    // Local frame: z = normal, x = along the module axis.
    let x = (along - n * along.dot(&n)).normalize();
    let rot = Rotation3::from_basis_unchecked(&[x, n.cross(&x), n]);
    let plate = Material::new([0.75, 0.75, 0.78], Texture::Plain).shiny(0.6, 90.0);
    let pin = Material::new([0.85, 0.85, 0.88], Texture::Plain).shiny(0.8, 120.0);
    let target = Material::new([0.08, 0.08, 0.08], Texture::Bands).shiny(0.3, 40.0);
    vec![
        place(
            Shape::Cuboid {
                half: Vector3::new(0.22, 0.22, 0.03),
            },
            at + n * 0.03,
            rot,
            plate,
            ids::GRAPPLE_FIXTURE,
        ),
        place(
            Shape::Cylinder {
                radius: 0.045,
                half_length: 0.16,
            },
            at + n * 0.22,
            rot,
            pin,
            ids::GRAPPLE_FIXTURE,
        ),
        place(
            Shape::Cuboid {
                half: Vector3::new(0.1, 0.1, 0.012),
            },
            at + n * 0.39,
            rot,
            target,
            ids::GRAPPLE_FIXTURE,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::raycast::Ray;
    use crate::data::synth::scene::Scene;
    use rand::SeedableRng;

    #[test]
    fn fixtures_sit_on_the_hull_and_face_free_space() {
        let station = Station::build(&mut ChaCha8Rng::seed_from_u64(3));
        assert!(station.fixtures.len() >= 6);
        let scene = Scene::new(station.objects.clone(), None);
        for f in &station.fixtures {
            // Looking back at the fixture from 4 m out along its normal, the first thing hit
            // is the fixture itself.
            let origin = f.position + f.normal.as_ref() * 4.0;
            let ray = Ray {
                origin,
                dir: -f.normal.into_inner(),
            };
            let hit = scene
                .intersect(&ray)
                .expect("the hull is behind the fixture");
            match hit {
                crate::data::synth::raycast::Hit::Object { index, .. } => {
                    assert_eq!(scene.objects[index].label, ids::GRAPPLE_FIXTURE)
                }
                other => panic!("hit {other:?}"),
            }
        }
    }
}
