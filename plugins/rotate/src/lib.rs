//! `rotate`: round-robin DNS. Each query gets the address answers rotated by one more place,
//! so clients that take the first address spread over all of them.

use switchyard_sdk::Ip;
use switchyard_sdk::dns::{Answer, DnsShaper, Question};

#[derive(Default)]
pub struct Rotate {
    turn: usize,
}

impl DnsShaper for Rotate {
    fn shape(&mut self, _q: &Question, _client: Ip, mut answers: Vec<Answer>) -> Vec<Answer> {
        if answers.len() > 1 {
            self.turn = self.turn.wrapping_add(1);
            let n = answers.len();
            answers.rotate_left(self.turn % n);
        }
        answers
    }
}

switchyard_sdk::export_dns!(Rotate);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::dns::rtype;

    #[test]
    fn each_address_comes_first_in_turn() {
        let mut r = Rotate::default();
        let answers: Vec<Answer> = (1..=3)
            .map(|i| Answer {
                name: "a.".into(),
                rtype: rtype::A,
                ttl: 5,
                rdata: vec![10, 0, 0, i],
            })
            .collect();
        let q = Question {
            name: "a.".into(),
            qtype: rtype::A,
        };
        let mut firsts: Vec<u8> = (0..3)
            .map(|_| r.shape(&q, Ip::default(), answers.clone())[0].rdata[3])
            .collect();
        firsts.sort();
        assert_eq!(firsts, [1, 2, 3]);
    }
}
