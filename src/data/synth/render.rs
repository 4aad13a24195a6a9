//! The camera, shading and the frame loop: one primary ray per pixel gives both the colour and
//! the mask id, so masks are exact by construction.
//!
//! Shading: one hard sun (Lambert + Blinn-Phong) with ray-traced shadows, a little ambient
//! earthshine, procedural textures on the local hit point, per-frame micro-facet glints, a lit
//! Earth with an atmosphere rim, and stars fixed to world directions.
use image::{GrayImage, RgbImage};
use nalgebra::{Point3, Rotation3, Unit, Vector3};
use rayon::prelude::*;

use super::noise;
use super::raycast::{Hit, Ray};
use super::scene::{ids, Material, Scene, Texture};
use crate::data::meta::Intrinsics;

/// Earthshine and scattered light reaching shadowed surfaces.
const AMBIENT: f64 = 0.04;
/// Glint facets: size of a facet (m), spread of facet normals, highlight exponent.
const GLINT_FACET: f64 = 0.015;
const GLINT_ROUGHNESS: f64 = 0.35;
const GLINT_EXPONENT: f64 = 600.0;
/// Fraction of star-field cells that hold a star.
const STAR_DENSITY: f64 = 0.0012;

/// A pinhole camera (OpenCV convention: looks along its +z, x right, y down).
#[derive(Clone, Debug)]
pub struct Camera {
    pub width: u32,
    pub height: u32,
    pub intrinsics: Intrinsics,
    pub position: Point3<f64>,
    /// Camera-to-world rotation.
    pub rotation: Rotation3<f64>,
}

impl Camera {
    /// The ray through image point `(x, y)` (pixel `(i, j)` has its centre at `(i + 0.5, j + 0.5)`).
    pub fn ray(&self, x: f64, y: f64) -> Ray {
        let k = &self.intrinsics;
        let d = Vector3::new((x - k.cx) / k.fx, (y - k.cy) / k.fy, 1.0);
        Ray {
            origin: self.position,
            dir: (self.rotation * d).normalize(),
        }
    }

    /// Image point of a world point and its depth along the optical axis; `None` behind the camera.
    pub fn project(&self, p: &Point3<f64>) -> Option<(f64, f64, f64)> {
        let c = self.rotation.inverse_transform_vector(&(p - self.position));
        if c.z <= 1e-9 {
            return None;
        }
        let k = &self.intrinsics;
        Some((k.fx * c.x / c.z + k.cx, k.fy * c.y / c.z + k.cy, c.z))
    }
}

/// Light of one frame.
#[derive(Clone, Debug)]
pub struct Lighting {
    /// Unit vector towards the sun (jittered per frame by the generator).
    pub sun: Unit<Vector3<f64>>,
    /// Salt of this frame's glint facets: a new salt re-rolls every facet.
    pub glint_salt: u64,
}

/// Renders one frame: the RGB image and the semantic-id mask from the same primary rays.
pub fn render(scene: &Scene, camera: &Camera, light: &Lighting) -> (RgbImage, GrayImage) {
    let w = camera.width as usize;
    let mut rgb = RgbImage::new(camera.width, camera.height);
    let mut mask = GrayImage::new(camera.width, camera.height);
    let bounds = screen_bounds(scene, camera);
    rgb.par_chunks_mut(w * 3)
        .zip(mask.par_chunks_mut(w))
        .enumerate()
        .for_each(|(y, (rgb_row, mask_row))| {
            let yc = y as f64 + 0.5;
            let row: Vec<&ScreenBox> = bounds.iter().filter(|b| b.y0 <= yc && yc <= b.y1).collect();
            for x in 0..w {
                let xc = x as f64 + 0.5;
                let ray = camera.ray(xc, yc);
                let candidates = row
                    .iter()
                    .filter(|b| b.x0 <= xc && xc <= b.x1)
                    .map(|b| (b.object, b.depth));
                let hit = scene.intersect_among(&ray, candidates);
                let (colour, id) = shade(scene, camera, light, &ray, hit);
                rgb_row[3 * x..3 * x + 3].copy_from_slice(&encode(&colour));
                mask_row[x] = id;
            }
        });
    (rgb, mask)
}

/// Image-plane bounds of an object, in pixels, and the least depth of its box (a lower bound
/// on the distance at which any primary ray can meet it: distance >= depth along the axis).
#[derive(Clone, Copy)]
struct ScreenBox {
    object: usize,
    depth: f64,
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

/// Per object, the image box its primary rays can hit: the bounds of its projected local-box
/// corners (conservative, since a box in front of the camera projects into the hull of its
/// corners), or the whole image when the box straddles the camera plane; objects wholly behind
/// are left out. Sorted nearest first, so primary rays try a handful of objects, near ones
/// first, instead of walking the BVH.
fn screen_bounds(scene: &Scene, camera: &Camera) -> Vec<ScreenBox> {
    let mut boxes: Vec<ScreenBox> = scene
        .objects
        .iter()
        .enumerate()
        .filter_map(|(object, obj)| {
            let h = obj.shape.local_half_extents();
            let mut b = ScreenBox {
                object,
                depth: f64::INFINITY,
                x0: f64::INFINITY,
                x1: f64::NEG_INFINITY,
                y0: f64::INFINITY,
                y1: f64::NEG_INFINITY,
            };
            let mut behind = 0;
            for i in 0..8 {
                let corner = Point3::new(
                    if i & 1 == 0 { -h.x } else { h.x },
                    if i & 2 == 0 { -h.y } else { h.y },
                    if i & 4 == 0 { -h.z } else { h.z },
                );
                match camera.project(&(obj.pose * corner)) {
                    None => behind += 1,
                    Some((u, v, depth)) => {
                        // A hundredth of a pixel of slack against rounding at the edges.
                        b.x0 = b.x0.min(u - 0.01);
                        b.x1 = b.x1.max(u + 0.01);
                        b.y0 = b.y0.min(v - 0.01);
                        b.y1 = b.y1.max(v + 0.01);
                        b.depth = b.depth.min(depth);
                    }
                }
            }
            match behind {
                0 => Some(b),
                8 => None,
                _ => Some(ScreenBox {
                    object,
                    depth: 0.0,
                    x0: f64::NEG_INFINITY,
                    x1: f64::INFINITY,
                    y0: f64::NEG_INFINITY,
                    y1: f64::INFINITY,
                }),
            }
        })
        .collect();
    // A stable sort: ties keep object order, so every run tries objects in the same order.
    boxes.sort_by(|a, b| a.depth.total_cmp(&b.depth));
    boxes
}

/// Colour (linear RGB) and mask id seen along a primary ray that hit `hit`.
fn shade(
    scene: &Scene,
    camera: &Camera,
    light: &Lighting,
    ray: &Ray,
    hit: Option<Hit>,
) -> (Vector3<f64>, u8) {
    match hit {
        None => (stars(camera, &ray.dir), ids::SPACE),
        Some(Hit::Earth { normal, .. }) => (earth(&normal, &ray.dir, light), ids::EARTH),
        Some(Hit::Object {
            index,
            t,
            local,
            normal,
        }) => {
            let obj = &scene.objects[index];
            // Thin sheets are seen from both sides: shade the side facing the camera.
            let n = if normal.dot(&ray.dir) > 0.0 {
                -normal
            } else {
                normal
            };
            let p = ray.origin + ray.dir * t;
            let local_n = obj.pose.inverse_transform_vector(&n);
            let albedo = texture(&obj.material, &local, &local_n);
            let sun = light.sun.into_inner();
            let ndl = n.dot(&sun);
            let lit = ndl > 0.0 && {
                let shadow = Ray {
                    origin: p + n * (1e-4 + 1e-6 * t),
                    dir: sun,
                };
                !scene.occluded(&shadow, f64::INFINITY)
            };
            let mut c = albedo * AMBIENT;
            if lit {
                let half = (sun - ray.dir).normalize();
                c += albedo * ndl
                    + Vector3::repeat(specular(&obj.material, &n, &half, &local, light));
            }
            (c, obj.label)
        }
    }
}

/// Blinn-Phong highlight plus this frame's glints (tilted micro-facets catching the sun).
fn specular(
    m: &Material,
    n: &Vector3<f64>,
    half: &Vector3<f64>,
    local: &Point3<f64>,
    light: &Lighting,
) -> f64 {
    let nh = n.dot(half);
    let mut s = if nh > 0.0 {
        m.specular * nh.powf(m.shininess)
    } else {
        0.0
    };
    // Facets tilt by at most GLINT_ROUGHNESS * sqrt(3); beyond that no glint can show.
    if m.glint > 0.0 && nh > 0.5 {
        let q = local.coords / GLINT_FACET;
        let h = noise::cell(
            q.x.floor() as i64,
            q.y.floor() as i64,
            q.z.floor() as i64,
            light.glint_salt,
        );
        let facet = (n + noise::jitter(h) * GLINT_ROUGHNESS).normalize();
        let fh = facet.dot(half);
        if fh > 0.98 {
            // 0.98^600 is 5e-6: below one grey level.
            s += m.glint * 3.0 * fh.powf(GLINT_EXPONENT);
        }
    }
    s
}

/// Face coordinates of a local point: the two axes other than the normal's dominant one.
fn face_uv(p: &Point3<f64>, n: &Vector3<f64>) -> (f64, f64) {
    match n.abs().imax() {
        0 => (p.y, p.z),
        1 => (p.x, p.z),
        _ => (p.x, p.y),
    }
}

/// Distance (in cell units) from `v` to the nearest multiple of `period`, over `period`.
fn seam(v: f64, period: f64) -> f64 {
    let f = (v / period).rem_euclid(1.0);
    f.min(1.0 - f)
}

/// Albedo at a local point of a surface.
fn texture(m: &Material, p: &Point3<f64>, n: &Vector3<f64>) -> Vector3<f64> {
    let a = m.albedo;
    match m.texture {
        Texture::Plain => a,
        Texture::Mli => {
            // Quilted blankets around a cylinder: panels 1.3 m around by 1.1 m along.
            let around = p.y.atan2(p.x) * p.coords.xy().norm();
            let (su, sv) = (seam(around, 1.3), seam(p.z, 1.1));
            let cell = noise::cell(
                (around / 1.3).floor() as i64,
                (p.z / 1.1).floor() as i64,
                0,
                11,
            );
            let tint = 0.92 + 0.12 * noise::unit(cell);
            let crinkle = 0.9 + 0.2 * noise::fbm(&Point3::from(p.coords * 4.0), 2, 5);
            let stitched = if su < 0.015 || sv < 0.02 { 0.55 } else { 1.0 };
            a * (tint * crinkle * stitched)
        }
        Texture::Lattice => {
            // Truss bays 1.2 m square with a frame and one diagonal; the rest is open (dark).
            let (u, v) = face_uv(p, n);
            let (s, t) = ((u / 1.2).rem_euclid(1.0), (v / 1.2).rem_euclid(1.0));
            let bay = 0.08..=0.92;
            let member = !bay.contains(&s) || !bay.contains(&t) || (s - t).abs() < 0.05;
            if member {
                a
            } else {
                a * 0.12
            }
        }
        Texture::Radiator => {
            let (u, v) = face_uv(p, n);
            let tubes = 0.88 + 0.12 * (u * 2.0 * std::f64::consts::PI / 0.12).sin();
            let panel = if seam(v, 1.3) < 0.015 { 0.6 } else { 1.0 };
            a * (tubes * panel)
        }
        Texture::SolarCells => {
            // 16 cm cells with thin bright gaps, a wider bus every 8 cells.
            let (u, v) = face_uv(p, n);
            let gap = seam(u, 0.16) < 0.05 || seam(v, 0.16) < 0.05;
            let bus = seam(u, 1.28) < 0.012 || seam(v, 1.28) < 0.012;
            if bus {
                Vector3::new(0.75, 0.7, 0.6)
            } else if gap {
                Vector3::new(0.45, 0.45, 0.48)
            } else {
                let cell = noise::cell((u / 0.16).floor() as i64, (v / 0.16).floor() as i64, 0, 23);
                a * (0.8 + 0.4 * noise::unit(cell))
            }
        }
        Texture::Foil => a * (0.55 + 0.6 * noise::fbm(&Point3::from(p.coords * 18.0), 3, 31)),
        Texture::Bands => {
            if seam(p.z, 0.12) < 0.25 {
                a * 0.35
            } else {
                a
            }
        }
    }
}

/// The Earth: oceans, land and clouds lit by the sun, and a blue atmosphere at the limb.
fn earth(n: &Vector3<f64>, dir: &Vector3<f64>, light: &Lighting) -> Vector3<f64> {
    let lambert = n.dot(&light.sun).max(0.0);
    let rim = (1.0 - n.dot(&-dir).abs()).powi(3);
    let sky = Vector3::new(0.25, 0.45, 0.95) * (lambert + 0.05).min(1.0);
    if lambert == 0.0 {
        // Night side: no surface to see, so no noise to evaluate.
        return sky * rim;
    }
    // Noise lattice in units of ~600 km (land) and ~150 km (clouds) on the unit sphere.
    let land = noise::fbm(&Point3::from(n * 10.0), 3, 41) > 0.58;
    let cloud = ((noise::fbm(&Point3::from(n * 40.0), 4, 43) - 0.45) * 2.5).clamp(0.0, 1.0);
    let ground = if land {
        Vector3::new(0.16, 0.17, 0.08)
    } else {
        Vector3::new(0.015, 0.05, 0.16)
    };
    let surface = ground * (1.0 - cloud) + Vector3::repeat(0.85) * cloud;
    surface * lambert * (1.0 - rim) + sky * rim
}

/// Star field: cube-map cells about one pixel wide, a few of which hold a star; fixed to world
/// directions so stars stay put as the camera moves.
fn stars(camera: &Camera, dir: &Vector3<f64>) -> Vector3<f64> {
    let axis = dir.abs().imax();
    let (a, b) = match axis {
        0 => (dir.y, dir.z),
        1 => (dir.x, dir.z),
        _ => (dir.x, dir.y),
    };
    let scale = camera.intrinsics.fx / dir[axis].abs();
    let face = (axis as i64) * 2 + i64::from(dir[axis] > 0.0);
    let h = noise::cell(
        (a * scale).floor() as i64,
        (b * scale).floor() as i64,
        face,
        57,
    );
    if noise::unit(h) >= STAR_DENSITY {
        return Vector3::zeros();
    }
    let brightness = 0.05 + 0.6 * noise::unit(noise::mix(h)).powi(3);
    let warm = noise::unit(noise::mix(h ^ 9)) * 0.3;
    Vector3::new(1.0, 1.0 - warm * 0.5, 1.0 - warm) * brightness
}

/// Linear RGB to 8-bit display values with gamma 2 (close to sRGB's 2.2, and a square root
/// instead of a `powf` per channel), clipping highlights.
fn encode(c: &Vector3<f64>) -> [u8; 3] {
    let f = |v: f64| (v.clamp(0.0, 1.0).sqrt() * 255.0 + 0.5) as u8;
    [f(c.x), f(c.y), f(c.z)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::scene::{Object, Shape};
    use nalgebra::IsometryMatrix3;

    fn camera(w: u32, h: u32) -> Camera {
        Camera {
            width: w,
            height: h,
            intrinsics: Intrinsics {
                fx: 50.0,
                fy: 50.0,
                cx: w as f64 / 2.0,
                cy: h as f64 / 2.0,
            },
            position: Point3::origin(),
            rotation: Rotation3::identity(),
        }
    }

    fn scene_of(shape: Shape, at: Vector3<f64>, label: u8) -> Scene {
        let obj = Object {
            shape,
            pose: IsometryMatrix3::translation(at.x, at.y, at.z),
            material: Material::new([0.5; 3], Texture::Plain),
            label,
        };
        Scene::new(vec![obj], None)
    }

    fn light() -> Lighting {
        Lighting {
            sun: Unit::new_normalize(Vector3::new(0.2, -0.5, -1.0)),
            glint_salt: 0,
        }
    }

    #[test]
    fn sphere_mask_equals_its_analytic_projection() {
        // Sphere of radius 1 at (0.4, -0.3, 5): a pixel is covered iff its centre ray passes
        // within 1 of the centre. Pixels within 1e-9 of the silhouette are not judged.
        let cam = camera(96, 64);
        let c = Vector3::new(0.4, -0.3, 5.0);
        let (_, mask) = render(
            &scene_of(Shape::Sphere { radius: 1.0 }, c, 4),
            &cam,
            &light(),
        );
        let mut covered = 0;
        for (x, y, m) in mask.enumerate_pixels() {
            let d = cam.ray(x as f64 + 0.5, y as f64 + 0.5).dir;
            let miss_distance = (c - d * c.dot(&d)).norm();
            if (miss_distance - 1.0).abs() < 1e-9 {
                continue;
            }
            let expected = if miss_distance < 1.0 { 4 } else { 0 };
            assert_eq!(m.0[0], expected, "pixel ({x}, {y})");
            covered += usize::from(expected == 4);
        }
        // Disc of angular radius asin(1/|c|) projects to roughly pi (f r / z)^2 pixels.
        assert!(covered > 250 && covered < 450, "{covered}");
    }

    #[test]
    fn centred_box_mask_is_its_front_face_rectangle() {
        // An axis-aligned box centred on the optical axis shows exactly its front face:
        // x in [cx - fx*hx/z0, cx + fx*hx/z0] with z0 the front face depth.
        let cam = camera(80, 60);
        let half = Vector3::new(1.0, 0.6, 0.5);
        let z0 = 6.0 - half.z;
        let (_, mask) = render(
            &scene_of(Shape::Cuboid { half }, Vector3::new(0.0, 0.0, 6.0), 3),
            &cam,
            &light(),
        );
        let k = &cam.intrinsics;
        for (x, y, m) in mask.enumerate_pixels() {
            let (u, v) = (x as f64 + 0.5, y as f64 + 0.5);
            let inside =
                (u - k.cx).abs() < k.fx * half.x / z0 && (v - k.cy).abs() < k.fy * half.y / z0;
            assert_eq!(m.0[0], if inside { 3 } else { 0 }, "pixel ({x}, {y})");
        }
    }

    #[test]
    fn shadowed_side_is_darker_than_lit_side_and_space_is_black_or_star() {
        let cam = camera(64, 48);
        let scene = scene_of(
            Shape::Sphere { radius: 1.5 },
            Vector3::new(0.0, 0.0, 5.0),
            2,
        );
        let light = Lighting {
            sun: Unit::new_normalize(Vector3::new(1.0, 0.0, -0.3)),
            glint_salt: 0,
        };
        let (img, mask) = render(&scene, &cam, &light);
        let lum = |x: u32, y: u32| img.get_pixel(x, y).0.iter().map(|&v| v as u32).sum::<u32>();
        assert_eq!(mask.get_pixel(44, 24).0[0], 2);
        assert_eq!(mask.get_pixel(20, 24).0[0], 2);
        assert!(
            lum(44, 24) > 3 * lum(20, 24),
            "{} vs {}",
            lum(44, 24),
            lum(20, 24)
        );
        for (x, y, m) in mask.enumerate_pixels() {
            if m.0[0] == 0 {
                let p = img.get_pixel(x, y).0;
                assert!(p[2] <= p[0] && p[0] < 230, "space pixel ({x},{y}) = {p:?}");
            }
        }
    }

    #[test]
    fn glints_change_from_frame_to_frame_but_masks_do_not() {
        let cam = camera(96, 64);
        let mut scene = scene_of(
            Shape::Sphere { radius: 1.5 },
            Vector3::new(0.0, 0.0, 5.0),
            2,
        );
        scene.objects[0].material = Material::new([0.8; 3], Texture::Mli).glinting(1.0);
        let frame = |salt| {
            render(
                &scene,
                &cam,
                &Lighting {
                    sun: Unit::new_normalize(Vector3::new(0.1, -0.2, -1.0)),
                    glint_salt: salt,
                },
            )
        };
        let ((a, ma), (b, mb)) = (frame(1), frame(2));
        assert_eq!(ma, mb);
        let changed = a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count();
        assert!(changed > 5, "only {changed} pixels flicker");
        assert_eq!(frame(1).0, a, "the same salt renders the same frame");
    }

    #[test]
    fn projection_inverts_the_pixel_ray() {
        let mut cam = camera(100, 80);
        cam.position = Point3::new(1.0, 2.0, 3.0);
        cam.rotation = Rotation3::from_euler_angles(0.3, -0.2, 0.9);
        let ray = cam.ray(17.25, 61.5);
        let (u, v, depth) = cam.project(&(ray.origin + ray.dir * 7.0)).unwrap();
        assert!((u - 17.25).abs() < 1e-9 && (v - 61.5).abs() < 1e-9 && depth > 0.0);
    }
}
